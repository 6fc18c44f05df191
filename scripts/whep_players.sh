# Sourced by scripts/test: fetch the published WHEP player the browser tests drive
# (tests/browser/test_whep_player.py), with npm, into .cache/npm/ of the checkout. Must run
# before entering the network namespace, which has no network; the tests serve the
# package's own files to the page, never from a CDN. Without it those tests are skipped,
# or fail in CI.
WHEP_PLAYER_PACKAGE=whip-whep
WHEP_PLAYER_VERSION=1.2.0  # tests/browser/test_whep_player.py reads this folder
NPM_CACHE_DIR="$ROOT/.cache/npm"

ensure_whep_players() {
  local folder="$NPM_CACHE_DIR/$WHEP_PLAYER_PACKAGE-$WHEP_PLAYER_VERSION"
  if [ -f "$folder/package.json" ] || [ "${AVATAR_TEST_NETNS:-}" = "1" ]; then
    return
  fi
  if ! command -v npm >/dev/null 2>&1; then
    log "no npm: the WHEP player browser tests need $WHEP_PLAYER_PACKAGE from the npm registry"
    return
  fi
  log "fetching $WHEP_PLAYER_PACKAGE@$WHEP_PLAYER_VERSION for the WHEP browser tests"
  local work
  work="$(mktemp -d)"
  # npm pack checks the tarball against the registry's integrity hash.
  if (cd "$work" && npm pack --silent "$WHEP_PLAYER_PACKAGE@$WHEP_PLAYER_VERSION" >/dev/null) &&
     mkdir -p "$folder" &&
     tar xzf "$work"/*.tgz -C "$folder" --strip-components=1; then
    :
  else
    log "could not fetch $WHEP_PLAYER_PACKAGE: the WHEP player browser tests will not run"
    rm -rf "$folder"
  fi
  rm -rf "$work"
}
