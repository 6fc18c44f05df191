# Sourced by scripts/setup.sh (so by scripts/serve and scripts/test): make sure Debian's
# espeak-ng is there for text to speech (TTS_ENGINE=espeak, the default), installing the
# distribution's package when it is not (as root with apt). Without it, /say and /chat
# answer 503 saying so, and the tests that speak text are skipped.
ESPEAK=espeak-ng

ensure_espeak() {
  if command -v "$ESPEAK" >/dev/null 2>&1 || [ "${AVATAR_TEST_NETNS:-}" = "1" ]; then
    return
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "no $ESPEAK: text to speech (POST /say, /chat) needs Debian's espeak-ng package (apt-get install espeak-ng)"
    return
  fi
  log "installing Debian's espeak-ng for text to speech"
  if ! { apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends espeak-ng >/dev/null; }; then
    log "could not install espeak-ng: POST /say and /chat will answer 503 until it is installed"
  fi
}
