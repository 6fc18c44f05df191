"""aiortc peer connections configured from the settings: ICE servers, host addresses."""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

def rtc_configuration(ice_servers: list[dict[str, Any]]) -> RTCConfiguration:
    """The server's own ICE configuration from the `ice_servers` its clients get
    (server/media/ice_servers.py).

    An explicit (possibly empty) list: aiortc falls back to a public STUN server when
    it is given None.
    """
    servers = [
        RTCIceServer(
            urls=entry["urls"],
            username=entry.get("username"),
            credential=entry.get("credential"),
        )
        for entry in ice_servers
    ]
    return RTCConfiguration(iceServers=servers)


def restrict_host_addresses(pc: RTCPeerConnection, addresses: Collection[str]) -> None:
    """Gather host ICE candidates only on `addresses` (call before setLocalDescription).

    aioice offers no such option and skips 127.0.0.1 when it lists interfaces, so the
    gatherer of each transport is given a filter; a loopback address named here is
    used even though aioice would not find it by itself.
    """
    if not addresses:
        return
    allowed = list(addresses)
    gatherers = [t.receiver.transport.transport.iceGatherer for t in pc.getTransceivers()]
    if pc.sctp is not None:
        gatherers.append(pc.sctp.transport.transport.iceGatherer)
    for gatherer in {id(g): g for g in gatherers}.values():
        connection = gatherer._connection  # aioice.Connection; private in aiortc
        if getattr(connection, "_avatar_server_restricted", False):
            continue
        original = connection.get_component_candidates

        @functools.wraps(original)
        async def only_allowed(component: int, addresses: list[str], timeout: int = 5,
                               _original: Any = original) -> Any:
            return await _original(component=component, addresses=allowed, timeout=timeout)

        connection.get_component_candidates = only_allowed
        connection._avatar_server_restricted = True

