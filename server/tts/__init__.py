"""Text to speech: one interface (`TextToSpeech`), one module per backend.

`espeak` (espeak-ng, a subprocess; the offline default), `piper` (Piper voices from
`models/tts/`) and `openai` (any OpenAI-compatible `/v1/audio/speech` service). Every
backend returns float32 mono audio at 48 kHz; SSML markup is removed before a backend
sees the text (`ssml.py`), so tags are never spoken.
"""
