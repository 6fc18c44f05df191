# Sourced by scripts/test: fetch HeyGen's published v1 client (@heygen/streaming-avatar 1.x,
# raw WebRTC against /v1/streaming.*) with npm into .cache/npm/<name>-<version>/ of the
# checkout, for tests/browser/test_heygen_client.py. Must run before entering the network
# namespace, which has no network; the test serves the package's own files to the page.
# Without it that test is skipped, or fails in CI.
HEYGEN_SDK_SPEC="@heygen/streaming-avatar@1.0.16"
HEYGEN_SDK_DIR="$ROOT/.cache/npm/heygen-streaming-avatar-1.0.16"

ensure_heygen_sdk() {
  if [ "${AVATAR_TEST_NETNS:-}" = "1" ] || [ -f "$HEYGEN_SDK_DIR/package.json" ]; then
    return
  fi
  if ! command -v npm >/dev/null 2>&1; then
    log "no npm: the HeyGen client browser test needs $HEYGEN_SDK_SPEC from the npm registry"
    return
  fi
  log "fetching $HEYGEN_SDK_SPEC for the HeyGen client browser test"
  local work
  work="$(mktemp -d)"
  # npm pack checks the tarball against the registry's integrity hash; its dependencies
  # are not needed (the package's code requires only its own files).
  if ! { (cd "$work" && npm pack --silent "$HEYGEN_SDK_SPEC" >/dev/null) &&
         mkdir -p "$HEYGEN_SDK_DIR" &&
         tar xzf "$work"/*.tgz -C "$HEYGEN_SDK_DIR" --strip-components=1; }; then
    log "could not fetch $HEYGEN_SDK_SPEC: the HeyGen client browser test will not run"
    rm -rf "$HEYGEN_SDK_DIR"
  fi
  rm -rf "$work"
}
