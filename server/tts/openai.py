"""Any OpenAI-compatible speech service: `POST {TTS_OPENAI_URL}/audio/speech`.

The request is OpenAI's (`model`, `input`, `voice`, `response_format`). A streamable
answer, `pcm` (24 kHz mono s16le, OpenAI's raw format), `mp3` or `opus` (Ogg/Opus), is
handed on piece by piece as it arrives (`open_stream`), so that the avatar starts
speaking before the service has finished; `wav` is read whole, up to a size bound.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import numpy as np

from server.media.stream_input import StreamFormat
from server.tts.audio import WavFormatError, pcm16_samples, read_wav, to_output_rate
from server.tts.engine import TextToSpeech, TtsFailedError

DEFAULT_VOICE = "alloy"
PCM_RATE = 24_000
FORMATS = ("pcm", "wav", "mp3", "opus")
STREAMED_FORMATS = {
    "pcm": StreamFormat("pcm_s16le", PCM_RATE, 1),
    "mp3": StreamFormat("mp3", 0, 0),
    "opus": StreamFormat("ogg_opus", 0, 0),
}
"""The service's response formats that are spoken as they arrive, as streamed speech."""
WAV_HEADER_SLACK_BYTES = 4096
ERROR_BODY_BYTES = 300


class OpenAiSpeechTts(TextToSpeech):
    """A remote speech service speaking OpenAI's `/audio/speech` API."""

    name = "openai"

    def __init__(
        self,
        url: str,
        key: str,
        model: str,
        voice: str,
        response_format: str,
        timeout_seconds: float,
        max_audio_seconds: float,
    ) -> None:
        self.url = url.rstrip("/")
        self._key = key
        self._model = model
        self._voice = voice or DEFAULT_VOICE
        self._format = response_format
        self.timeout_seconds = timeout_seconds
        # s16le mono; a wav service could use another rate: 48 kHz bounds both.
        self.max_bytes = int(max_audio_seconds * 48_000 * 2) + WAV_HEADER_SLACK_BYTES
        self.stream_format = STREAMED_FORMATS.get(response_format)

    def unavailable_reason(self) -> str | None:
        if not self.url:
            return (
                "TTS_ENGINE=openai needs TTS_OPENAI_URL, the speech service's base URL "
                "(for example https://api.openai.com/v1)."
            )
        return None

    def default_voice(self) -> str:
        return self._voice

    def voices(self) -> list[str]:
        return []  # the service decides; an unknown voice is its error

    def _request(self, text: str, voice: str) -> tuple[str, dict[str, str], dict[str, str]]:
        endpoint = f"{self.url}/audio/speech"
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        body = {"model": self._model, "input": text, "voice": voice, "response_format": self._format}
        return endpoint, headers, body

    def _refused(self, status: int, detail: bytes) -> TtsFailedError:
        text = detail[:ERROR_BODY_BYTES].decode("utf-8", "replace").strip()
        return TtsFailedError(
            f"The speech service at {self.url} answered {status}: {text or 'no message'}."
        )

    def _failed(self, error: httpx.HTTPError) -> TtsFailedError:
        if isinstance(error, httpx.TimeoutException):
            return TtsFailedError(
                f"The speech service at {self.url} did not answer within {self.timeout_seconds:g} s."
            )
        return TtsFailedError(f"The speech service at {self.url} could not be reached: {error}.")

    @contextlib.asynccontextmanager
    async def open_stream(self, text: str, voice: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """The service's answer, once it has said 200, as the pieces of audio in
        `stream_format` that arrive; TtsFailedError (503) when it fails, before or during."""
        self.check_available()
        endpoint, headers, body = self._request(text, voice)
        try:
            async with httpx.AsyncClient(timeout=self.timeout_seconds) as client:
                async with client.stream("POST", endpoint, json=body, headers=headers) as response:
                    if response.status_code != 200:
                        raise self._refused(response.status_code, await response.aread())
                    yield self._pieces(response)
        except httpx.HTTPError as error:
            raise self._failed(error) from None

    async def _pieces(self, response: httpx.Response) -> AsyncIterator[bytes]:
        size = 0
        async for block in response.aiter_bytes():
            size += len(block)
            if size > self.max_bytes:
                raise TtsFailedError(
                    f"The speech service's answer is larger than {self.max_bytes} bytes "
                    "(MAX_AUDIO_SECONDS of audio)."
                )
            yield block

    def synthesize_blocking(self, text: str, voice: str) -> np.ndarray:
        endpoint, headers, body = self._request(text, voice)
        data = bytearray()
        try:
            with httpx.Client(timeout=self.timeout_seconds) as client:
                with client.stream("POST", endpoint, json=body, headers=headers) as response:
                    if response.status_code != 200:
                        raise self._refused(response.status_code, response.read())
                    for block in response.iter_bytes():
                        data += block
                        if len(data) > self.max_bytes:
                            raise TtsFailedError(
                                f"The speech service's answer is larger than {self.max_bytes} bytes "
                                "(MAX_AUDIO_SECONDS of audio)."
                            )
        except httpx.HTTPError as error:
            raise self._failed(error) from None
        if self._format == "wav":
            try:
                samples, rate = read_wav(bytes(data))
            except WavFormatError as error:
                raise TtsFailedError(f"The speech service's WAV could not be read ({error}).") from None
        else:
            samples, rate = pcm16_samples(bytes(data)), PCM_RATE
        return to_output_rate(samples, rate)
