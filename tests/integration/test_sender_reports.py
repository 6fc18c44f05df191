"""RTCP sender reports pair each track's RTP timestamps with its media time.

A receiver (a browser too) lines audio and video up through the reports: each pairs an
RTP timestamp with a wall-clock time. aiortc pairs the last packet's timestamp with when
it was sent, so a packet that left late shifted the whole track by as much, at random,
report after report. The tracks put the frame's media time in the pair instead.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import httpx
import pytest

from server.media.video_encoder import Vp8FrameEncoder
from tests.audio_files import encode, speech_like
from tests.webrtc_client import AUDIO_RATE, VIDEO_RATE, ClientPeer, SenderReport

pytestmark = pytest.mark.webrtc

SLOW_ENCODE_SECONDS = 0.045
"""Every third VP8 encode takes this much longer, as on a loaded box: those frames'
packets leave that late."""


def line_spread(reports: list[SenderReport], rate: int) -> float:
    """How far the reports' (NTP, RTP) pairs lie from one line of slope 1 / rate, in s."""
    first = reports[0].rtp
    offsets = [r.ntp - (((r.rtp - first + 2**31) % 2**32) - 2**31) / rate for r in reports]
    return max(offsets) - min(offsets)


async def test_sender_reports_keep_the_media_clock_when_packets_leave_late(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    delays = itertools.cycle([0.0, 0.0, SLOW_ENCODE_SECONDS])
    encode_frame = Vp8FrameEncoder.encode

    def slow_encode(self: Vp8FrameEncoder, *args: object, **kwargs: object) -> tuple[bytes, bool]:
        time.sleep(next(delays))
        return encode_frame(self, *args, **kwargs)

    monkeypatch.setattr(Vp8FrameEncoder, "encode", slow_encode)
    created = (await http.post("/webrtc/sessions/create", params={"fps": 25, "playback_fps": 25})).json()
    peer = ClientPeer(http, created["session_id"])
    try:
        await peer.connect()
        speech = encode(speech_like(7.0), "wav")  # speech: the session's own encoder runs
        response = await http.post(
            f"/webrtc/sessions/{created['session_id']}/stream",
            files={"audio_file": ("speech.wav", speech, "audio/wav")},
        )
        assert response.status_code == 200, response.text
        await peer.wait_for_event("speaking_started", timeout=10)
        started = len(peer.received.video_reports), len(peer.received.audio_reports)
        await asyncio.sleep(6.0)
        video = peer.received.video_reports[started[0]:]
        audio = peer.received.audio_reports[started[1]:]
        # Reports come every 0.5 to 1.5 s.
        assert len(video) >= 3 and len(audio) >= 3, (len(video), len(audio))
        # The frames did leave late: their arrival wanders by about the slow encode.
        arrivals = [v.arrival - v.pts / VIDEO_RATE for v in peer.received.video[-100:]]
        assert max(arrivals) - min(arrivals) > SLOW_ENCODE_SECONDS / 2
        # Yet every report lies on the track's media clock (aiortc's own pairs: 15 ms apart).
        assert line_spread(video, VIDEO_RATE) < 0.002
        assert line_spread(audio, AUDIO_RATE) < 0.002
    finally:
        await peer.close()
