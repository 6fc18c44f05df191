"""One event fan-out for the data channel and the event streams; slow listeners."""

from __future__ import annotations

import asyncio
import json

import pytest

from server.api.event_stream import format_event
from server.sessions.events import EVENTS_LOST, EventFanout, SessionEvent


async def test_sinks_and_listeners_get_every_event_in_order_numbered() -> None:
    fanout = EventFanout(backlog=8, common={"session_id": "s1"})
    sunk: list[SessionEvent] = []
    fanout.add_sink(sunk.append)
    async with fanout.listen() as first, fanout.listen() as second:
        fanout.publish("speaking_started", utterance_id="u1")
        fanout.publish("speaking_ended", utterance_id="u1", played_seconds=1.5)
        for listener in (first, second):
            events = [await listener.next(timeout=1), await listener.next(timeout=1)]
            assert [(e.seq, e.type) for e in events] == [(1, "speaking_started"), (2, "speaking_ended")]
    assert [e.seq for e in sunk] == [1, 2]
    assert sunk[1].message()["session_id"] == "s1"
    assert sunk[1].message()["played_seconds"] == 1.5


async def test_a_slow_listener_loses_its_oldest_events_and_is_told_how_many() -> None:
    fanout = EventFanout(backlog=4)
    async with fanout.listen() as slow:
        for i in range(10):  # never blocks, whatever the listener does
            fanout.publish("tick", i=i)
        lost = await slow.next(timeout=1)
        assert lost is not None and lost.type == EVENTS_LOST and lost.fields["count"] == 6
        kept = [await slow.next(timeout=1) for _ in range(4)]
        assert [e.fields["i"] for e in kept] == [6, 7, 8, 9]
        assert slow.lost == 6


async def test_listeners_end_after_reading_what_was_published_before_close() -> None:
    fanout = EventFanout(backlog=8)
    async with fanout.listen(first=fanout.event("state", state="idle")) as listener:
        fanout.publish("session_ended", reason="deleted")
        fanout.close()
        assert (await listener.next(timeout=1)).type == "state"
        assert (await listener.next(timeout=1)).type == "session_ended"
        assert await listener.next(timeout=1) is None
    assert fanout.listener_count == 0


async def test_a_listener_waiting_with_nothing_to_read_times_out_for_a_heartbeat() -> None:
    fanout = EventFanout(backlog=8)
    async with fanout.listen() as listener:
        with pytest.raises(TimeoutError):
            await listener.next(timeout=0.05)
        asyncio.get_running_loop().call_later(0.02, fanout.publish, "late")
        assert (await listener.next(timeout=1)).type == "late"


def test_server_sent_events_carry_the_type_the_number_and_one_json_line() -> None:
    event = SessionEvent("utterance_interrupted", {"utterance_id": "u3", "played_seconds": 0.8}, seq=7)
    text = format_event(event)
    lines = text.split("\n")
    assert lines[:2] == ["id: 7", "event: utterance_interrupted"]
    assert lines[2].startswith("data: ") and text.endswith("\n\n")
    data = json.loads(lines[2][len("data: ") :])
    assert data["type"] == "utterance_interrupted" and data["seq"] == 7 and data["played_seconds"] == 0.8
    assert not format_event(SessionEvent("state", {"state": "idle"})).startswith("id:")
