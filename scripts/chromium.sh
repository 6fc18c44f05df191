# Sourced by scripts/test and scripts/bench_player: make sure Debian's Chromium is there
# for the browser tests, installing the distribution's package when it is not (as root
# with apt, as in CI). Must run before entering the network namespace, which has no
# network. Without Chromium the browser tests are skipped, or fail in CI.
CHROMIUM=/usr/bin/chromium  # tests/browser/player_page.py launches this one

ensure_chromium() {
  if [ -x "$CHROMIUM" ] || [ "${AVATAR_TEST_NETNS:-}" = "1" ]; then
    return
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "no $CHROMIUM: the browser tests need Debian's chromium package"
    return
  fi
  log "installing Debian's chromium for the browser tests"
  if ! { apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; then
    log "could not install chromium: the browser tests will not run"
  fi
}
