# Sourced by scripts/test and scripts/bench_player: make sure Debian's Chromium is
# there for the browser tests, installing the distribution's package when it is not
# (as root with apt, i.e. in CI). Must run before entering the network namespace,
# which has no network. Without it the browser tests are skipped (outside CI).
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

ensure_chromium() {
  if [ -x "$CHROMIUM" ] || [ "${AVATAR_TEST_NETNS:-}" = "1" ]; then
    return
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian's chromium for the browser tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    log "no $CHROMIUM: the browser tests will be skipped (install Debian's chromium package)"
  fi
}
