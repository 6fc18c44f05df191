# Sourced by scripts/test: fetch D-ID's published client SDK (@d-id/client-sdk), which
# tests/browser/test_did_client_sdk.py drives against this server, with npm, into
# .cache/npm/<name>-<version>/ of the checkout. Must run before entering the network
# namespace, which has no network; the test serves the package's own files to the page,
# never from a CDN. Without it that test is skipped.
DID_SDK_SPEC="@d-id/client-sdk@2.0.10"  # bundles its one dependency (livekit-client)
DID_SDK_FOLDER="d-id-client-sdk-2.0.10"  # tests/browser/test_did_client_sdk.py reads it

ensure_did_sdk() {
  if [ "${AVATAR_TEST_NETNS:-}" = "1" ]; then
    return
  fi
  local folder="$ROOT/.cache/npm/$DID_SDK_FOLDER" work
  [ -f "$folder/package.json" ] && return
  if ! command -v npm >/dev/null 2>&1; then
    log "no npm: the D-ID client SDK browser test needs $DID_SDK_SPEC from the npm registry"
    return
  fi
  log "fetching $DID_SDK_SPEC for the D-ID client SDK browser test"
  work="$(mktemp -d)"
  # npm pack checks the tarball against the registry's integrity hash.
  if ! { (cd "$work" && npm pack --silent "$DID_SDK_SPEC" >/dev/null) &&
         mkdir -p "$folder" &&
         tar xzf "$work"/*.tgz -C "$folder" --strip-components=1; }; then
    log "could not fetch $DID_SDK_SPEC: the D-ID client SDK browser test will not run"
    rm -rf "$folder"
  fi
  rm -rf "$work"
}
