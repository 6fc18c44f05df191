# Sourced by scripts/test and scripts/bench_player: run the calling script inside a
# private network namespace of its own, with loopback and a veth pair with private
# addresses (so that Chromium, which gathers ICE candidates only on non-loopback
# interfaces, has one), and no link to anywhere else: nothing run there can send a
# packet off this machine.
#   enter_private_network "$0" "$@"
# re-executes the script inside a new namespace; inside it, it brings the links up.
# The addresses are the ones tests/live_server.py looks for.
NETNS_HOST_ADDRESS=10.203.0.1
NETNS_PEER_ADDRESS=10.203.0.2

enter_private_network() {
  if [ "${AVATAR_TEST_NETNS:-}" = "1" ]; then
    ip link set lo up
    ip link add avs-veth0 type veth peer name avs-veth1
    ip addr add "$NETNS_HOST_ADDRESS/24" dev avs-veth0
    ip addr add "$NETNS_PEER_ADDRESS/24" dev avs-veth1
    ip link set avs-veth0 up
    ip link set avs-veth1 up
    # Chromium offers host candidates only on the interface of the default route (unless
    # the page may use the camera): without one it trickles none at all. The route leads
    # into the veth pair, inside this namespace, which forwards nothing: still nothing
    # can leave it.
    ip route add default via "$NETNS_HOST_ADDRESS" dev avs-veth1
    return
  fi
  if [ "${AVATAR_TEST_HOST_NETWORK:-}" = "1" ]; then
    return
  fi
  if [ "$(id -u)" = 0 ]; then
    exec unshare --net -- env AVATAR_TEST_NETNS=1 "$@"
  elif unshare --user --map-root-user --net true 2>/dev/null; then
    exec unshare --user --map-root-user --net -- env AVATAR_TEST_NETNS=1 "$@"
  fi
  echo "$(basename "$1"): cannot create a private network namespace (needs root or user namespaces)." >&2
  echo "Set AVATAR_TEST_HOST_NETWORK=1 to run on the host network (WebRTC tests then use loopback only, browser tests are skipped)." >&2
  exit 1
}
