# Sourced by scripts/test: fetch the published WHEP players the browser tests drive
# (tests/browser/test_whep_player.py), with npm, into .cache/npm/<name>-<version>/ of the
# checkout. Must run before entering the network namespace, which has no network; the
# tests serve the packages' own files to the page, never from a CDN. Without them those
# tests are skipped, or fail in CI.
NPM_CACHE_DIR="$ROOT/.cache/npm"
# name@version folder: tests/browser/test_whep_player.py reads these folders.
WHEP_PLAYER_PACKAGES=(
  "whip-whep@1.2.0 whip-whep-1.2.0"
  "@eyevinn/webrtc-player@0.13.0 eyevinn-webrtc-player-0.13.0"
  "events@3.3.0 events-3.3.0"  # the one dependency @eyevinn/webrtc-player's WHEP player uses
)

ensure_whep_players() {
  if [ "${AVATAR_TEST_NETNS:-}" = "1" ]; then
    return
  fi
  local entry spec folder work
  for entry in "${WHEP_PLAYER_PACKAGES[@]}"; do
    spec="${entry% *}"
    folder="$NPM_CACHE_DIR/${entry#* }"
    [ -f "$folder/package.json" ] && continue
    if ! command -v npm >/dev/null 2>&1; then
      log "no npm: the WHEP player browser tests need $spec from the npm registry"
      return
    fi
    log "fetching $spec for the WHEP player browser tests"
    work="$(mktemp -d)"
    # npm pack checks the tarball against the registry's integrity hash.
    if ! { (cd "$work" && npm pack --silent "$spec" >/dev/null) &&
           mkdir -p "$folder" &&
           tar xzf "$work"/*.tgz -C "$folder" --strip-components=1; }; then
      log "could not fetch $spec: the WHEP player browser tests will not run"
      rm -rf "$folder"
    fi
    rm -rf "$work"
  done
}
