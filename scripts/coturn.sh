# Sourced by scripts/test and scripts/bench_turn: make sure Debian's coturn is there for
# the TURN tests, installing the distribution's package when it is not (as root with apt,
# as in CI). Must run before entering the network namespace, which has no network. The
# package's own system service is never started: the tests start their own turnserver,
# inside their namespace. Without it the TURN tests are skipped, or fail in CI.
TURNSERVER=/usr/bin/turnserver  # tests/turn_server.py runs this one

ensure_coturn() {
  if [ -x "$TURNSERVER" ] || [ "${AVATAR_TEST_NETNS:-}" = "1" ]; then
    return
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "no $TURNSERVER: the TURN tests need Debian's coturn package"
    return
  fi
  log "installing Debian's coturn for the TURN tests (its system service is not started)"
  # policy-rc.d answering 101 keeps the package from starting (and exposing) a TURN server
  # on this machine's interfaces while it is installed.
  local policy=/usr/sbin/policy-rc.d made_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
  fi
  if ! { apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends coturn >/dev/null; }; then
    log "could not install coturn: the TURN tests will not run"
  fi
  if [ -n "$made_policy" ]; then
    rm -f "$policy"
  fi
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now coturn >/dev/null 2>&1 || true
  fi
}
