"""The session's aiortc tracks: audio and video paced by the one session clock.

Both hand aiortc encoded `av.Packet`s, which it only splits into RTP packets: Opus is
encoded on the event loop as each frame is released, VP8 in the video pool or taken from
the avatar's shared idle loop (server/media/encoding.py, server/media/idle_share.py).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

from server.media.audio_encoder import OpusFrameEncoder
from server.media.clock import (
    AUDIO_SAMPLE_RATE,
    AUDIO_SAMPLES_PER_FRAME,
    AUDIO_TIME_BASE,
    TIME_EPSILON,
    VIDEO_CLOCK_RATE,
    VIDEO_TIME_BASE,
    SessionClock,
    audio_frame_at_or_after,
    audio_frame_time,
)
from server.media.idle_share import AvatarPictures, SharedIdleLoop
from server.media.playout import Playout, VideoPick
from server.media.video_encoder import Vp8FrameEncoder, to_yuv420p

# aiortc sends a packet after recv() returns and before it calls recv() again, and the
# tracks encode between waking and returning; releasing frames that much early makes them
# leave at their media time, which is what the receiver's RTCP-based sync sees. Smoothed,
# and capped so a stall cannot push it far.
SEND_LATENCY_SMOOTHING = 0.1
MAX_SEND_ADVANCE = 0.04

_SILENCE = np.zeros((1, AUDIO_SAMPLES_PER_FRAME), np.int16)
OPUS = "audio/opus"
VP8 = "video/vp8"
SILENCE_SETTLE_FRAMES = 5
"""Silent frames encoded before the encoder's silence packet is kept and sent as it is
while the silence lasts: an idle session's audio then costs no encode at all."""
LATE_FRAME_WAIT_SECONDS = 0.015
"""How long a video frame may wait for its speech frame, rendered as its audio has just
arrived, before the frame before is shown a tick longer: the packet leaves that much
later, with its own timestamp, so the picture stays in sync."""


class _PacedTrack(MediaStreamTrack):
    """A track that releases each frame at its media time, early by the send latency.

    The latency is kept apart for frames it encodes and frames it takes ready-made (the
    shared idle loop's), which leave almost at once: the next frame is released early by
    the latency of the kind the last one was.
    """

    def __init__(self, clock: SessionClock, monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        self._monotonic = monotonic
        self._woke_at: float | None = None
        self._latency = {True: 0.0, False: 0.0}  # by whether the frame was encoded here
        self._last_encoded = True
        self.frames_sent = 0
        self.codec: str | None = None
        """The negotiated codec's MIME type, lower case (known once the sender starts)."""
        self.sender: Any = None
        """Its aiortc RTCRtpSender (`attach_sender`)."""
        self._last_packet: tuple[int, float] | None = None  # (pts, media time) last given
        self._packets_seen = 0  # the sender's packet count when the track last looked
        self._rtp_origin: int | None = None  # the sender's RTP timestamp for pts 0

    @property
    def send_latency(self) -> float:
        """Seconds from releasing a frame to its having been sent, for frames it encodes."""
        return self._latency[True]

    async def _release_at(self, media_time: float, wake: asyncio.Event | None = None) -> bool:
        """Wait until the frame at `media_time` is to leave. False when `wake` was set first:
        nothing was released, and the frame's time may be looked at again."""
        if self.readyState != "live":
            raise MediaStreamError
        now = self._monotonic()
        kind = self._last_encoded
        if self._woke_at is not None:  # measured once per frame, not again after a wake
            latency = min(now - self._woke_at, MAX_SEND_ADVANCE)
            self._latency[kind] += SEND_LATENCY_SMOOTHING * (latency - self._latency[kind])
            self._woke_at = None
        released = await self.clock.sleep_until(media_time - self._latency[kind], wake)
        if self.readyState != "live":
            raise MediaStreamError
        if released:
            self._woke_at = self._monotonic()
        return released

    def _returned(self, encoded: bool = True, packet: tuple[int, float] | None = None) -> None:
        """A frame is handed to aiortc: `packet` is (pts, media time) when it is an
        encoded one (its RTP timestamp is then its pts)."""
        self._last_encoded = encoded
        self.frames_sent += 1
        self._last_packet = packet

    def _stamp_sender_report(self) -> None:
        """Pair, in the sender's next RTCP sender report, the RTP timestamp of the frame
        last sent with that frame's media time (as wall-clock NTP), not with when its
        packet left.

        aiortc reports the last packet's timestamp with the time it was sent, so a packet
        that left late (a loaded loop, a slow encode) tells the receiver that the whole
        track's media is that much later, and its lip sync (a browser's, too) moves by as
        much until the next report. Called at the start of `recv`, when the sender has
        just sent the frame before and nothing ran since. aiortc private attributes."""
        sender, last = self.sender, self._last_packet
        if sender is None or last is None:
            return
        count = getattr(sender, "_RTCRtpSender__packet_count", None)
        timestamp = getattr(sender, "_RTCRtpSender__rtp_timestamp", None)
        if not isinstance(count, int) or not isinstance(timestamp, int):
            return
        sent, self._packets_seen = count != self._packets_seen, count
        if not sent:  # the last frame was dropped (a disabled sender): nothing to pair
            return
        pts, media_time = last
        origin = (timestamp - pts) & 0xFFFFFFFF
        if self._rtp_origin is None:
            self._rtp_origin = origin
        elif origin != self._rtp_origin:
            return  # not the timestamp of the frame given last: leave aiortc's pair
        sender._RTCRtpSender__ntp_timestamp = self.clock.ntp(media_time)


class AvatarAudioTrack(_PacedTrack):
    """48 kHz mono, exactly 960 samples per frame, contiguous timestamps, sent as Opus.

    Silence while idle, the utterance while speaking; the playout decides which.
    """

    kind = "audio"

    def __init__(self, playout: Playout, clock: SessionClock) -> None:
        super().__init__(clock)
        self.playout = playout
        self._encoder = OpusFrameEncoder()
        self._silent_run = 0
        self._silence: bytes | None = None
        self._next: int | None = None

    async def recv(self) -> av.Packet | AudioFrame:  # type: ignore[override]
        self._stamp_sender_report()
        if self._next is None:
            self._next = audio_frame_at_or_after(self.clock.now())
        if self.codec not in (None, OPUS):
            return await self._frame_for_aiortc()
        n = self._next
        self._next += 1
        await self._release_at(audio_frame_time(n))
        samples = self.playout.audio_frame(n)
        if samples is None:
            self._silent_run += 1
            pcm = _SILENCE
        else:
            self._silent_run = 0
            pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)[None, :]
        if self._silence is not None and self._silent_run > SILENCE_SETTLE_FRAMES:
            payload = self._silence
        else:  # on the loop: see server/media/encoding.py
            payload = self._encoder.encode(pcm)
            if self._silent_run == SILENCE_SETTLE_FRAMES:
                self._silence = payload
        packet = av.Packet(payload)
        packet.pts = pts = n * AUDIO_SAMPLES_PER_FRAME
        packet.time_base = AUDIO_TIME_BASE
        self._returned(packet=(pts, pts / AUDIO_SAMPLE_RATE))
        return packet

    async def _frame_for_aiortc(self) -> AudioFrame:
        """A frame for aiortc to encode itself (a codec other than Opus: PCMU, PCMA)."""
        assert self._next is not None
        n = self._next
        self._next += 1
        await self._release_at(audio_frame_time(n))
        samples = self.playout.audio_frame(n)
        pcm = _SILENCE if samples is None else np.round(np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)[None, :]
        frame = AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.pts = n * AUDIO_SAMPLES_PER_FRAME
        frame.time_base = AUDIO_TIME_BASE
        self._returned()
        return frame


class AvatarVideoTrack(_PacedTrack):
    """Video at `playback_fps`: the idle loop, or the rendered frame for the audio's time.

    Sent as VP8 from its own encoder, or, while idle, from the avatar's `idle_loop` once
    joined at one of its keyframes (server/media/idle_share.py).
    """

    kind = "video"

    def __init__(
        self,
        playout: Playout,
        clock: SessionClock,
        pictures: AvatarPictures,
        playback_fps: float,
        executor: Executor | None = None,
        idle_loop: SharedIdleLoop | None = None,
    ) -> None:
        super().__init__(clock)
        self.playout = playout
        self.pictures = pictures
        self.avatar_frames = pictures.frames
        self.playback_fps = playback_fps
        self.output_size = pictures.size
        """(width, height) frames are scaled to; None: the avatar's own size."""
        self.frames_skipped = 0
        self.frames_shared = 0
        """Frames sent from the shared idle loop rather than encoded for this viewer."""
        self.frames_repeated = 0
        """Frames that showed the rendered picture before again (playback_fps above fps),
        sent as a VP8 repeat frame rather than encoded again."""
        self.loop_switches = 0
        """Switches between the shared loop and the track's own encoder, both ways."""
        self.keyframe_requests = 0
        self._executor = executor
        self._idle_loop = idle_loop
        self._encoder = Vp8FrameEncoder()
        self._keyframe_wanted = False
        self._shared: tuple[int, int] | None = None  # (variant, position - frame), while joined
        self._last_frame = -1
        # Where to join the loop: (variant, offset, frame); variant None: nothing matched.
        self._plan: tuple[int | None, int, int] | None = None
        self._last_image: tuple[Any, np.ndarray] | None = None  # a rendered frame, converted
        self._shown: Any = None
        """The rendered image the receiver shows, if this track's encoder sent it last."""
        self._next: int | None = None
        self._phase = 0.0
        """Frame k leaves at k / playback_fps + this: the grid moves at each speech start."""
        self._last_time = -math.inf  # the media time of the last frame released
        self.rephased = 0
        """Times the grid moved so that speech's first frame left with its first audio."""
        self._start_scheduled = asyncio.Event()
        playout.start_events.add(self._start_scheduled)
        self._frame_added = asyncio.Event()
        playout.frame_events.add(self._frame_added)

    @property
    def keyframes_encoded(self) -> int:
        return self._encoder.keyframes

    def request_keyframe(self) -> None:
        """The receiver lost the picture (PLI/FIR): the next frame is a keyframe."""
        self.keyframe_requests += 1
        self._keyframe_wanted = True

    async def recv(self) -> av.Packet | VideoFrame:  # type: ignore[override]
        self._stamp_sender_report()
        rate = self.playback_fps
        now_index = math.floor((self.clock.now() - self._phase) * rate + TIME_EPSILON)
        if self._next is None:
            self._next = now_index + 1
        elif now_index > self._next:
            # Sending fell behind by more than a frame: skip to now rather than lag.
            self.frames_skipped += now_index - self._next
            self._next = now_index
        k = self._next
        self._next += 1
        t = k / rate + self._phase
        while True:
            self._start_scheduled.clear()
            start = self.playout.scheduled_start()
            # The first frame to show speech (the one before did not) leaves at its start.
            if (
                start is not None
                and self._last_time + 0.5 / rate < start <= t + 0.5 / rate
                and abs(start - t) > TIME_EPSILON
            ):
                k, t = self._rephase(k, t, start)
            if await self._release_at(t, self._start_scheduled):
                break
        self._last_time = t
        # A frame is on screen for 1 / playback_fps: show what belongs to the middle of
        # that time, so the picture is never more than half a frame early or late.
        middle = t + 0.5 / rate
        if self.playout.frame_pending(middle):
            await self._wait_for_frame(middle)
        pick = self.playout.video_frame(middle)
        if self.codec not in (None, VP8):
            return self._frame_for_aiortc(pick, t)
        data = shared = self._from_shared_loop(k, pick)
        pts = round(t * VIDEO_CLOCK_RATE)
        repeat = None
        if shared is None:
            keyframe, self._keyframe_wanted = self._keyframe_wanted, False
            if not keyframe and pick.image is not None and pick.image is self._shown:
                repeat = self._encoder.repeat()
            if repeat is None:
                data = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._encode, pick, pts, keyframe
                )
            else:
                data = repeat
                self.frames_repeated += 1
                # Ready at once, it would leave early by what encoding takes (the frame was
                # released that early): it waits to leave on time, as an encoded one does,
                # and the next frame is released early by the encoder's latency again.
                await self.clock.sleep_until(t - self._latency[False])
                self._woke_at = None  # this frame says nothing of the encoder's latency
        else:
            self.frames_shared += 1
            self._shown = None
        self._last_frame = k
        packet = av.Packet(data)
        packet.pts = pts
        packet.time_base = VIDEO_TIME_BASE
        self._returned(encoded=shared is None, packet=(pts, pts / VIDEO_CLOCK_RATE))
        return packet

    async def _wait_for_frame(self, middle: float) -> None:
        """Wait (at most LATE_FRAME_WAIT_SECONDS) for the speech frame for `middle`."""
        deadline = self._monotonic() + LATE_FRAME_WAIT_SECONDS
        while self.playout.frame_pending(middle):
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                return
            self._frame_added.clear()
            try:
                await asyncio.wait_for(self._frame_added.wait(), remaining)
            except TimeoutError:
                return

    def _rephase(self, k: int, t: float, start: float) -> tuple[int, float]:
        """Move the frame grid so that frame `k` (due at `t`, the first to show speech)
        leaves at `start` instead, the media time speech starts: its first frame then
        leaves with its first audio, rather than up to half a playback frame early or a
        whole one late, and every later frame on the grid of its sound. The frame before
        is on screen that much less or more."""
        rate = self.playback_fps
        self._phase += start - t
        # Kept within one frame: frame k's time may be k - 1's or k + 1's on the new grid.
        while self._phase < 0:
            self._phase += 1 / rate
            k -= 1
            self._next -= 1
        while self._phase >= 1 / rate:
            self._phase -= 1 / rate
            k += 1
            self._next += 1
        self.rephased += 1
        return k, k / rate + self._phase

    def _frame_for_aiortc(self, pick: VideoPick, t: float) -> VideoFrame:
        """A frame for aiortc to encode itself (a codec other than VP8: H.264)."""
        if pick.image is None:
            frame = VideoFrame.from_ndarray(self.pictures.yuv(pick.avatar_index), format="yuv420p")
        else:
            frame = VideoFrame.from_ndarray(pick.image, format="rgb24")
            if self.output_size is not None:
                frame = frame.reformat(width=self.output_size[0], height=self.output_size[1])
        frame.pts = round(t * VIDEO_CLOCK_RATE)
        frame.time_base = VIDEO_TIME_BASE
        self._last_frame = -1
        self._shown = None
        self._returned()
        return frame

    def _encode(self, pick: VideoPick, pts: int, keyframe: bool) -> bytes:
        """Encode `pick` with the track's own encoder (in the video pool, one call at a time:
        the converted frame it keeps is this thread's while it encodes)."""
        if pick.image is None:
            yuv = self.pictures.yuv(pick.avatar_index)
        elif self._last_image is not None and self._last_image[0] is pick.image:
            yuv = self._last_image[1]  # repeated at playback_fps > fps: converted once
        else:
            yuv = to_yuv420p(pick.image, self.output_size)
            self._last_image = (pick.image, yuv)
        data, _ = self._encoder.encode(yuv, pts, keyframe, self._wanted_bitrate())
        self._shown = pick.image
        return data

    def _wanted_bitrate(self) -> int | None:
        # aiortc gives a REMB's bitrate to the encoder of the sender (which this track's
        # packets leave unused), clamped to its range; read it there (aiortc private).
        encoder = getattr(self.sender, "_RTCRtpSender__encoder", None)
        return getattr(encoder, "target_bitrate", None)

    def _from_shared_loop(self, k: int, pick: VideoPick) -> bytes | None:
        """The shared loop's packet for frame `k`, if this frame may come from it."""
        loop = self._idle_loop
        if loop is None or not loop.ready or pick.image is not None or pick.speaking:
            self._leave_shared_loop()
            self._plan = None
            return None
        if self._shared is not None:
            variant, offset = self._shared
            q = k + offset
            fits = loop.picture(variant, q) == pick.avatar_index
            if k == self._last_frame + 1 and not self._keyframe_wanted and fits:
                return loop.packet(variant, q)
            self._leave_shared_loop()
            return None
        if self.playout.utterance is not None:  # pending: the idle loop is about to stop
            self._plan = None
            return None
        if self._plan is None or k > self._plan[2]:
            self._plan = self._plan_join(loop, k)
        variant, offset, join = self._plan
        if variant is None or k < join:
            return None
        q = k + offset
        if loop.is_keyframe(variant, q) and loop.picture(variant, q) == pick.avatar_index:
            self._shared = (variant, offset)
            self._keyframe_wanted = False
            self.loop_switches += 1
            return loop.packet(variant, q)
        self._plan = None
        return None

    def _plan_join(self, loop: SharedIdleLoop, k: int) -> tuple[int | None, int, int]:
        frames = range(k, k + loop.rate_period + 1)
        counters = [
            self.playout.idle_counter((j + 0.5) / self.playback_fps + self._phase) for j in frames
        ]
        plan = loop.plan(counters, k)
        # No match (cannot happen for a steady idle loop): look again a keyframe later.
        return plan if plan is not None else (None, 0, k + loop.keyframe_interval)

    def _leave_shared_loop(self) -> None:
        if self._shared is not None:
            self._shared = None
            self._keyframe_wanted = True  # the receiver holds the loop's pictures, not ours
            self.loop_switches += 1


def attach_sender(sender: Any, track: AvatarAudioTrack | AvatarVideoTrack) -> None:
    """Tell `track` its aiortc RTCRtpSender's codec when it starts (it encodes Opus and VP8
    itself and hands aiortc frames for any other codec), and make the receiver's PLI/FIR
    (and REMB) reach a video track: aiortc only honours them when it encodes (its
    `RTCRtpSender._send_keyframe`). aiortc private attributes; aiortc 1.16."""
    start = sender.send

    async def send(parameters: Any) -> None:
        track.codec = parameters.codecs[0].mimeType.lower()
        await start(parameters)

    sender.send = send
    if isinstance(track, AvatarVideoTrack):
        aiortc_keyframe = sender._send_keyframe

        def keyframe() -> None:
            aiortc_keyframe()  # for aiortc's own encoder, when the codec is not VP8
            track.request_keyframe()

        sender._send_keyframe = keyframe
    track.sender = sender
