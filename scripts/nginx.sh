# Sourced by scripts/test: make sure Debian's nginx (and its njs module, which the config
# in deploy/nginx uses to route by a JSON body) is there for the two-node proxy test,
# installing the distribution's packages when they are not (as root with apt, as in CI).
# Must run before entering the network namespace, which has no network. The package's own
# system service is never started: the test runs its own nginx, inside its namespace.
# Without it that test is skipped, or fails in CI.
NGINX=/usr/sbin/nginx  # tests/nginx_proxy.py runs this one
NGINX_JS_MODULE=/usr/lib/nginx/modules/ngx_http_js_module.so

ensure_nginx() {
  if { [ -x "$NGINX" ] && [ -e "$NGINX_JS_MODULE" ]; } || [ "${AVATAR_TEST_NETNS:-}" = "1" ]; then
    return
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "no $NGINX with njs: the proxy test needs Debian's nginx and libnginx-mod-http-js"
    return
  fi
  log "installing Debian's nginx and njs for the proxy test (its system service is not started)"
  # policy-rc.d answering 101 keeps the package from starting a web server on this
  # machine's port 80 while it is installed.
  local policy=/usr/sbin/policy-rc.d made_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
  fi
  if ! { apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
           nginx libnginx-mod-http-js >/dev/null; }; then
    log "could not install nginx: the proxy test will not run"
  fi
  if [ -n "$made_policy" ]; then
    rm -f "$policy"
  fi
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
}
