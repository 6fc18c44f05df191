"""/metrics after real activity: a session that speaks over a real aiortc peer, refusals."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.audio_files import encode, speech_like
from tests.conftest import make_settings, running_app
from tests.webrtc_client import ClientPeer

pytestmark = pytest.mark.webrtc

UTTERANCE_SECONDS = 1.2


async def scrape(http: httpx.AsyncClient) -> dict[str, float]:
    """Every sample of /metrics, keyed `name{label="value",...}` (labels sorted)."""
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def upload(http: httpx.AsyncClient, session_id: str, data: bytes, name: str) -> httpx.Response:
    return await http.post(
        f"/webrtc/sessions/{session_id}/stream", files={"audio_file": (name, data, "application/octet-stream")}
    )


async def test_a_spoken_utterance_moves_the_session_speech_and_render_metrics(http: httpx.AsyncClient) -> None:
    before = await scrape(http)
    assert before["avatar_sessions_created_total"] == 0
    assert before["avatar_utterances_started_total"] == 0
    sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
    waiting = await scrape(http)
    assert waiting['avatar_sessions{state="waiting"}'] == 1
    assert waiting["avatar_sessions_created_total"] == 1
    peer = ClientPeer(http, sid)
    try:
        await peer.connect()
        connected = await scrape(http)
        assert connected['avatar_sessions{state="idle"}'] == 1
        assert connected['avatar_sessions{state="waiting"}'] == 0

        speech = encode(speech_like(UTTERANCE_SECONDS), "wav")
        assert (await upload(http, sid, speech, "speech.wav")).status_code == 200
        await peer.wait_for_event("speaking_started", timeout=5)
        speaking = await scrape(http)
        assert speaking['avatar_sessions{state="speaking"}'] == 1
        assert speaking["avatar_utterances_started_total"] == 1
        assert speaking["avatar_time_to_first_frame_seconds_count"] == 1
        await peer.wait_for_event("speaking_ended", timeout=UTTERANCE_SECONDS + 5)
        after = await scrape(http)
    finally:
        await peer.close()

    assert after["avatar_utterances_finished_total"] == 1
    assert after["avatar_utterances_cancelled_total"] == 0
    assert after["avatar_speech_seconds_total"] == pytest.approx(UTTERANCE_SECONDS, abs=0.021)
    # The time to the first audible sample is at least the prebuffer's worth of rendering.
    start_delay = after["avatar_time_to_first_frame_seconds_sum"]
    assert 0 < start_delay < 3
    info = (await http.get(f"/webrtc/sessions/{sid}")).json()
    assert start_delay == pytest.approx(info["sync"]["last_start_delay"], abs=1e-6)
    frames = round(UTTERANCE_SECONDS * 10)  # the session's default fps
    assert after["avatar_frames_rendered_total"] >= frames
    assert after["avatar_render_batch_size_sum"] == after["avatar_frames_rendered_total"]
    assert after['avatar_render_batch_size_bucket{le="+Inf"}'] >= frames / 8  # demo's max batch
    assert after["avatar_render_busy_seconds_total"] > 0
    for name in ("avatar_audio_holds_total", "avatar_video_frames_late_total", "avatar_frames_late_total"):
        assert name in after


async def test_counters_keep_an_ended_sessions_figures(http: httpx.AsyncClient) -> None:
    sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
    peer = ClientPeer(http, sid)
    try:
        await peer.connect()
        speech = encode(speech_like(3.0), "wav")
        assert (await upload(http, sid, speech, "speech.wav")).status_code == 200
        await peer.wait_for_event("speaking_started", timeout=5)
        assert (await http.delete(f"/webrtc/sessions/{sid}")).status_code == 200
    finally:
        await peer.close()
    ended = await scrape(http)
    assert ended["avatar_utterances_started_total"] == 1
    assert ended["avatar_utterances_cancelled_total"] == 1
    assert 0 < ended["avatar_speech_seconds_total"] < 3.0
    assert all(ended[f'avatar_sessions{{state="{state}"}}'] == 0 for state in ("waiting", "idle", "speaking"))


async def test_refused_uploads_are_counted_by_kind_and_status() -> None:
    async with running_app(make_settings(max_audio_seconds=2.0)) as http:
        sid = (await http.post("/webrtc/sessions/create")).json()["session_id"]
        peer = ClientPeer(http, sid)
        try:
            await peer.connect()
            wav = encode(speech_like(1.0), "wav")
            assert (await upload(http, sid, wav[: len(wav) // 2], "cut.wav")).status_code == 400
            assert (await upload(http, sid, b"", "empty.wav")).status_code == 400
            assert (await upload(http, sid, encode(speech_like(3.0), "wav"), "long.wav")).status_code == 413
            assert (await upload(http, sid, b"hello " * 200, "note.txt")).status_code == 415
            samples = await scrape(http)
        finally:
            await peer.close()
    assert samples['avatar_decode_failures_total{kind="corrupt",status="400"}'] == 2
    assert samples['avatar_decode_failures_total{kind="too_large",status="413"}'] == 1
    assert samples['avatar_decode_failures_total{kind="unsupported",status="415"}'] == 1
    assert samples['avatar_refusals_total{status="400"}'] == 2


async def test_refusals_are_counted_by_status(http: httpx.AsyncClient) -> None:
    assert (await http.get("/webrtc/sessions/nosuchsession")).status_code == 404
    assert (await http.post("/webrtc/sessions/nosuchsession/offer", json={"sdp": "x", "type": "offer"})).status_code == 404
    assert (await http.post("/webrtc/sessions/create", params={"fps": 0})).status_code == 422
    assert (await http.get("/no/such/page")).status_code == 404
    samples = await scrape(http)
    assert samples['avatar_refusals_total{status="404"}'] == 3
    assert samples['avatar_refusals_total{status="422"}'] == 1
    assert 'avatar_decode_failures_total{kind="corrupt",status="400"}' not in samples


async def test_decode_worker_crashes_are_counted_by_cause(http: httpx.AsyncClient) -> None:
    metrics = http.app.state.server.metrics  # type: ignore[attr-defined]
    assert 'avatar_decode_worker_crashes_total{cause="crashed"}' not in await scrape(http)
    metrics.decode_worker_crashed()
    metrics.decode_worker_crashed("wall_time")
    samples = await scrape(http)
    assert samples['avatar_decode_worker_crashes_total{cause="crashed"}'] == 1
    assert samples['avatar_decode_worker_crashes_total{cause="wall_time"}'] == 1


async def test_each_server_has_its_own_metrics() -> None:
    async with running_app(make_settings()) as first, running_app(make_settings()) as second:
        await first.post("/webrtc/sessions/create")
        assert (await scrape(first))["avatar_sessions_created_total"] == 1
        assert (await scrape(second))["avatar_sessions_created_total"] == 0
