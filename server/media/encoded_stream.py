"""Incremental decoding of streamed MP3 and Ogg/Opus, with strict caps.

It runs in an isolated decode worker (server/isolation: `DecodePool.open_fed`, made by
`open_encoded_stream`), never in the server process: the worker's memory, CPU-time and
wall-time limits hold for it as for uploads. FFmpeg's decoders through PyAV do the work,
message by message: MP3 with FFmpeg's frame parser (it skips what is not a frame),
Ogg/Opus with the small page reader below (the packets go to the Opus decoder). Its own
caps: the undecoded Ogg bytes held, at most `MAX_CHANNELS` channels and `MAX_SAMPLE_RATE`,
corrupt packets skipped up to `MAX_BAD_PACKETS`, and the decoded duration (a stream that
decodes to more than its limit is refused as soon as it does, within one message).
"""

from __future__ import annotations

import struct

import av
import numpy as np
import soxr

from server.media.audio_input import frame_to_mono
from server.media.clock import AUDIO_SAMPLE_RATE
from server.media.stream_input import RESAMPLE_QUALITY, StreamFormatError
from server.refusal import Refusal

MAX_PENDING_BYTES = 256 * 1024
"""Undecoded bytes held at most (an Ogg page is at most ~64 KiB, an MP3 frame ~2 KiB)."""
MAX_CHANNELS = 2
MAX_SAMPLE_RATE = 48_000
MAX_BAD_PACKETS = 8
OGG_CAPTURE = b"OggS"
OGG_HEADER = struct.Struct("<4sBBqIIIB")  # capture, version, type, granule, serial, seq, crc, segments
OPUS_HEAD = b"OpusHead"
OPUS_TAGS = b"OpusTags"


class EncodedStreamTooLongError(Refusal):
    status = 413


def open_encoded_stream(format: str, max_seconds: float) -> EncodedStreamDecoder:
    """The decoder of a stream in `format` (in a decode worker: `DecodePool.open_fed`)."""
    return EncodedStreamDecoder(format, max_seconds)


class EncodedStreamDecoder:
    """MP3 or Ogg/Opus bytes to float32 mono 48 kHz, as they arrive; refused (413) once
    it has decoded more than `max_seconds`."""

    def __init__(self, format: str, max_seconds: float | None = None) -> None:
        self.format = format
        self.max_seconds = max_seconds
        self._max_samples = None if max_seconds is None else round(max_seconds * AUDIO_SAMPLE_RATE)
        self._decoded = 0
        self._codec = av.CodecContext.create("mp3" if format == "mp3" else "libopus", "r")
        self._ogg = OggPackets() if format == "ogg_opus" else None
        self._opus_head_seen = False
        self._pre_skip = 0
        self._rate: int | None = None
        self._resampler: soxr.ResampleStream | None = None
        self._bad = 0

    def feed(self, data: bytes) -> np.ndarray:
        return self._decode_all(self._packets(data), last=False)

    def finish(self) -> np.ndarray:
        packets = self._packets(b"", final=True)
        return self._decode_all([*packets, None], last=True)

    # --- inside ----------------------------------------------------------------------------

    def _packets(self, data: bytes, final: bool = False) -> list[bytes | av.Packet]:
        if self._ogg is None:
            packets = list(self._codec.parse(data)) if data or final else []
            if final:
                packets += list(self._codec.parse(b""))
            return packets
        out: list[bytes | av.Packet] = []
        for packet in self._ogg.feed(data):
            if not self._opus_head_seen:
                if not packet.startswith(OPUS_HEAD) or len(packet) < 19:
                    raise StreamFormatError("The Ogg stream does not start with an Opus header (OpusHead).")
                channels = packet[9]
                if not 1 <= channels <= MAX_CHANNELS:
                    raise StreamFormatError(f"The Opus stream has {channels} channels; at most {MAX_CHANNELS}.")
                self._pre_skip = struct.unpack_from("<H", packet, 10)[0]
                self._codec.extradata = packet
                self._opus_head_seen = True
                continue
            if packet.startswith(OPUS_TAGS):
                continue
            out.append(packet)
        if self._ogg.pending > MAX_PENDING_BYTES:
            raise StreamFormatError("The Ogg stream holds a page too large to be a real one.")
        if final and self._ogg.pending:
            raise StreamFormatError("The Ogg stream ends inside a page.")
        return out

    def _decode_all(self, packets: list[bytes | av.Packet | None], last: bool) -> np.ndarray:
        pieces: list[np.ndarray] = []
        for packet in packets:
            if isinstance(packet, bytes):
                packet = av.Packet(packet)
            try:
                frames = self._codec.decode(packet)
            except av.error.FFmpegError as error:
                self._bad += 1
                if self._bad > MAX_BAD_PACKETS:
                    raise StreamFormatError(
                        f"The {self.format} stream does not decode ({error}); send "
                        f"{self.format} as an encoder writes it."
                    ) from None
                continue
            for frame in frames:
                piece = self._to_48k(frame)
                self._decoded += len(piece)
                if self._max_samples is not None and self._decoded > self._max_samples:
                    raise EncodedStreamTooLongError(
                        f"The streamed speech is longer than {self.max_seconds:g} s "
                        "(MAX_AUDIO_SECONDS); end the utterance and start another."
                    )
                pieces.append(piece)
        if last and self._resampler is not None:
            pieces.append(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        if not pieces:
            return np.zeros(0, np.float32)
        samples = np.concatenate(pieces).astype(np.float32, copy=False)
        if self._pre_skip:
            skip = min(self._pre_skip, len(samples))
            samples = samples[skip:]
            self._pre_skip -= skip
        return samples

    def _to_48k(self, frame: av.AudioFrame) -> np.ndarray:
        channels = len(frame.layout.channels)
        if not 1 <= channels <= MAX_CHANNELS:
            raise StreamFormatError(f"The stream has {channels} channels; at most {MAX_CHANNELS}.")
        rate = frame.sample_rate
        if not 0 < rate <= MAX_SAMPLE_RATE:
            raise StreamFormatError(f"The stream's sample rate {rate} is not supported.")
        if self._rate is None:
            self._rate = rate
            if rate != AUDIO_SAMPLE_RATE:
                self._resampler = soxr.ResampleStream(rate, AUDIO_SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY)
        elif rate != self._rate:
            raise StreamFormatError(f"The stream's sample rate changed from {self._rate} to {rate}.")
        mono = np.clip(np.nan_to_num(frame_to_mono(frame, channels)), -1.0, 1.0).astype(np.float32)
        return mono if self._resampler is None else self._resampler.resample_chunk(mono)


class OggPackets:
    """Packets of an Ogg bitstream (one logical stream), from bytes in any pieces."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._partial = bytearray()
        self._serial: int | None = None

    @property
    def pending(self) -> int:
        return len(self._buffer) + len(self._partial)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        packets: list[bytes] = []
        while len(self._buffer) >= OGG_HEADER.size:
            capture, version, _kind, _granule, serial, _seq, _crc, count = OGG_HEADER.unpack_from(self._buffer)
            if capture != OGG_CAPTURE or version != 0:
                raise StreamFormatError("Not an Ogg stream (no 'OggS' page where one should start).")
            if self._serial is None:
                self._serial = serial
            elif serial != self._serial:
                raise StreamFormatError("The Ogg stream holds more than one logical stream.")
            header_end = OGG_HEADER.size + count
            if len(self._buffer) < header_end:
                break
            lacing = self._buffer[OGG_HEADER.size : header_end]
            page_end = header_end + sum(lacing)
            if len(self._buffer) < page_end:
                break
            offset = header_end
            for size in lacing:
                self._partial += self._buffer[offset : offset + size]
                offset += size
                if size < 255:
                    packets.append(bytes(self._partial))
                    self._partial.clear()
            del self._buffer[:page_end]
        return packets
