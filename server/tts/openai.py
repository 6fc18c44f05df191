"""Any OpenAI-compatible speech service: `POST {TTS_OPENAI_URL}/audio/speech`.

The request is OpenAI's (`model`, `input`, `voice`, `response_format`); the answer is
read as it streams in, up to a size bound, as `pcm` (24 kHz mono s16le, OpenAI's raw
format) or `wav`.
"""

from __future__ import annotations

import httpx
import numpy as np

from server.tts.audio import WavFormatError, pcm16_samples, read_wav, to_output_rate
from server.tts.engine import TextToSpeech, TtsFailedError

DEFAULT_VOICE = "alloy"
PCM_RATE = 24_000
FORMATS = ("pcm", "wav")
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

    def synthesize_blocking(self, text: str, voice: str) -> np.ndarray:
        endpoint = f"{self.url}/audio/speech"
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        body = {"model": self._model, "input": text, "voice": voice, "response_format": self._format}
        data = bytearray()
        try:
            with httpx.Client(timeout=self.timeout_seconds) as client:
                with client.stream("POST", endpoint, json=body, headers=headers) as response:
                    if response.status_code != 200:
                        detail = response.read()[:ERROR_BODY_BYTES].decode("utf-8", "replace")
                        raise TtsFailedError(
                            f"The speech service at {self.url} answered {response.status_code}: "
                            f"{detail.strip() or 'no message'}."
                        )
                    for block in response.iter_bytes():
                        data += block
                        if len(data) > self.max_bytes:
                            raise TtsFailedError(
                                f"The speech service's answer is larger than {self.max_bytes} bytes "
                                "(MAX_AUDIO_SECONDS of audio)."
                            )
        except httpx.TimeoutException:
            raise TtsFailedError(
                f"The speech service at {self.url} did not answer within {self.timeout_seconds:g} s."
            ) from None
        except httpx.HTTPError as error:
            raise TtsFailedError(f"The speech service at {self.url} could not be reached: {error}.") from None
        if self._format == "wav":
            try:
                samples, rate = read_wav(bytes(data))
            except WavFormatError as error:
                raise TtsFailedError(f"The speech service's WAV could not be read ({error}).") from None
        else:
            samples, rate = pcm16_samples(bytes(data)), PCM_RATE
        return to_output_rate(samples, rate)
