# Sourced by scripts/test: fetch the published clients the browser tests drive against this
# server, with npm, into .cache/npm/<name>-<version>/ of the checkout. Must run before
# entering the network namespace, which has no network; the tests serve the packages' own
# files to the page, never from a CDN. Without them those tests are skipped, or fail in CI.
NPM_CACHE_DIR="$ROOT/.cache/npm"
# "name@version folder test": the tests read these folders. Dependencies are not fetched:
# each package's code needs only its own files (or the ones listed here).
NPM_TEST_PACKAGES=(
  "whip-whep@1.2.0 whip-whep-1.2.0 WHEP player"  # tests/browser/test_whep_player.py
  "@eyevinn/webrtc-player@0.13.0 eyevinn-webrtc-player-0.13.0 WHEP player"
  "events@3.3.0 events-3.3.0 WHEP player"  # the one dependency @eyevinn/webrtc-player's WHEP player uses
  "@heygen/streaming-avatar@1.0.16 heygen-streaming-avatar-1.0.16 HeyGen client"  # test_heygen_client.py
  "@d-id/client-sdk@2.0.10 d-id-client-sdk-2.0.10 D-ID client SDK"  # test_did_client_sdk.py; bundles livekit-client
)

ensure_npm_packages() {
  if [ "${AVATAR_TEST_NETNS:-}" = "1" ]; then
    return
  fi
  local entry spec rest folder test work
  for entry in "${NPM_TEST_PACKAGES[@]}"; do
    spec="${entry%% *}"
    rest="${entry#* }"
    folder="$NPM_CACHE_DIR/${rest%% *}"
    test="${rest#* }"
    [ -f "$folder/package.json" ] && continue
    if ! command -v npm >/dev/null 2>&1; then
      log "no npm: the $test browser tests need $spec from the npm registry"
      continue
    fi
    log "fetching $spec for the $test browser tests"
    work="$(mktemp -d)"
    # npm pack checks the tarball against the registry's integrity hash.
    if ! { (cd "$work" && npm pack --silent "$spec" >/dev/null) &&
           mkdir -p "$folder" &&
           tar xzf "$work"/*.tgz -C "$folder" --strip-components=1; }; then
      log "could not fetch $spec: the $test browser tests will not run"
      rm -rf "$folder"
    fi
    rm -rf "$work"
  done
}
