"""The `musetalk` engine: MuseTalk 1.5 / 1.0 with the official weights, in batches.

Modules, in the order the data flows:

- `weights`  — the files in `models/` (MuseTalk's layout), and whether they are usable;
- `checkpoint` — reading a weight file into a network, strictly;
- `audio`    — whisper-tiny encoder features and the window each video frame sees;
- `unet`, `vae` — the two image networks, built and loaded as MuseTalk does;
- `model`    — one inference step: latents + audio → 256 x 256 faces;
- `blending` — the face mask and pasting a face back into its frame, on the device;
- `avatar`   — what the engine precomputes per avatar (latents, boxes, masks), cached;
- `engine`   — `MuseTalkEngine`, the `LipSyncEngine` the render worker drives;
- `tiny_weights` — small random weights in the official layout, for tests and benchmarks.

Importing this package imports nothing heavy: torch, diffusers and transformers are
loaded by the modules that need them.
"""
