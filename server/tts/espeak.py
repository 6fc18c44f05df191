"""espeak-ng (Debian's `espeak-ng`), run as a subprocess: text on stdin, WAV on stdout."""

from __future__ import annotations

import logging
import shutil
import subprocess

import numpy as np

from server.tts.audio import WavFormatError, read_wav, to_output_rate
from server.tts.engine import TextToSpeech, TtsFailedError

logger = logging.getLogger(__name__)

EXECUTABLE = "espeak-ng"
DEFAULT_VOICE = "en-us"
VOICE_LIST_TIMEOUT_SECONDS = 10.0
# espeak-ng's `--voices` table: priority, language, age/gender, name, file, other languages.
LANGUAGE_COLUMN, FILE_COLUMN = 1, 4


class EspeakTts(TextToSpeech):
    """espeak-ng's formant voices: offline, instant, robotic; any language it has."""

    name = "espeak"

    def __init__(self, voice: str, timeout_seconds: float, executable: str | None = None) -> None:
        self._voice = voice or DEFAULT_VOICE
        self.timeout_seconds = timeout_seconds
        self._executable = executable or shutil.which(EXECUTABLE)
        self._voice_list: tuple[str, ...] | None = None

    def unavailable_reason(self) -> str | None:
        if self._executable is None:
            return (
                "Text to speech needs espeak-ng, which is not installed: install Debian's "
                "espeak-ng package (./scripts/setup.sh does it when run as root), or choose "
                "another TTS_ENGINE."
            )
        known = self.voices()
        if known and self._voice not in known:
            return f"TTS_VOICE={self._voice!r} is not an espeak-ng voice (see espeak-ng --voices)."
        return None

    def default_voice(self) -> str:
        return self._voice

    def voices(self) -> list[str]:
        if self._voice_list is None:
            self._voice_list = self._list_voices()
        return list(self._voice_list)

    def _list_voices(self) -> tuple[str, ...]:
        """The language codes and voice files `espeak-ng --voices` lists (`-v` takes both)."""
        if self._executable is None:
            return ()
        try:
            listing = subprocess.run(
                [self._executable, "--voices"],
                capture_output=True, text=True, timeout=VOICE_LIST_TIMEOUT_SECONDS, check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError) as error:
            logger.warning("espeak-ng --voices failed (%s): voices are not checked", error)
            return ()
        names: set[str] = set()
        for line in listing.splitlines()[1:]:
            columns = line.split()
            if len(columns) > FILE_COLUMN:
                names.update((columns[LANGUAGE_COLUMN], columns[FILE_COLUMN]))
        return tuple(sorted(names))

    def synthesize_blocking(self, text: str, voice: str) -> np.ndarray:
        assert self._executable is not None
        # The text goes on stdin (never a shell, never an argument it could be read as an
        # option from); -b 1: it is UTF-8. The voice was checked against `--voices`.
        command = [self._executable, "-b", "1", "-v", voice, "--stdin", "--stdout"]
        try:
            done = subprocess.run(
                command, input=text.encode("utf-8"), capture_output=True,
                timeout=self.timeout_seconds,
            )
        except subprocess.TimeoutExpired:
            raise TtsFailedError(
                f"espeak-ng took longer than {self.timeout_seconds:g} s to speak the text."
            ) from None
        except OSError as error:
            raise TtsFailedError(f"espeak-ng could not be run: {error}.") from None
        if done.returncode != 0:
            message = done.stderr.decode("utf-8", "replace").strip()[:200]
            raise TtsFailedError(f"espeak-ng failed (exit {done.returncode}): {message or 'no message'}.")
        try:
            samples, rate = read_wav(done.stdout)
        except WavFormatError as error:
            raise TtsFailedError(f"espeak-ng wrote audio that could not be read ({error}).") from None
        return to_output_rate(samples, rate)
