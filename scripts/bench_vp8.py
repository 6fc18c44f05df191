#!/usr/bin/env python3
"""What a VP8 frame costs with the server's encoder options, against variants of them.

Encodes the demo avatar speaking (8 s rendered by the demo engine at 25 fps, 512×512)
twice over with `Vp8FrameEncoder`, then the same pictures with camera-like noise added
(a new Gaussian draw per frame, σ 3 levels, as a webcam's video has): per option set, the
median time per frame, the mean frame size and the PSNR of the decoded second pass
against the pictures encoded (and, for the noisy ones, against the clean pictures too).
Sets are run in turn, `--rounds` times, and the medians of their rounds kept.

    .venv/bin/python scripts/bench_vp8.py [--rounds 3]

Prints a table and writes bench-results/vp8.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import av
import numpy as np

from benchkit import print_table, write_json
from server.lipsync.demo.engine import DemoEngine
from server.lipsync.demo.face import build_demo_avatar
from server.lipsync.engine import RenderRequest
from server.media.video_encoder import CODEC_OPTIONS, Vp8FrameEncoder, to_yuv420p
from tests.audio_files import speech_like

FPS = 25
SECONDS = 8.0
NOISE_SIGMA = 3.0
VARIANTS = {
    "server": {},
    "noise-sensitivity 4 (aiortc's)": {"noise-sensitivity": "4"},
}


def speaking_pictures() -> list[np.ndarray]:
    engine = DemoEngine()
    avatar = engine.load_avatar(build_demo_avatar())
    count = round(SECONDS * FPS)
    features = engine.audio_features(speech_like(SECONDS), FPS, range(count))
    frames = len(avatar.avatar.frames)
    images = [engine.render([RenderRequest(avatar, j % frames, f)])[0] for j, f in enumerate(features)]
    return [to_yuv420p(image) for image in images]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(error, 1e-12)))


def encode_twice(options: dict[str, str], pictures: list[np.ndarray], clean: list[np.ndarray]) -> dict[str, float]:
    """Two passes over `pictures`; the second one's pictures are decoded and compared."""
    encoder = Vp8FrameEncoder(options)
    decoder = av.CodecContext.create("vp8", "r")
    times, sizes, fidelity, to_clean = [], [], [], []
    for second in (False, True):
        for j, picture in enumerate(pictures):
            pts = (len(pictures) * second + j) * 90_000 // FPS
            started = time.perf_counter()
            data, _ = encoder.encode(picture, pts, keyframe=not second and j == 0)
            times.append(time.perf_counter() - started)
            sizes.append(len(data))
            for frame in decoder.decode(av.Packet(data)):
                if second:
                    shown = frame.to_ndarray(format="yuv420p")
                    fidelity.append(psnr(shown, picture))
                    to_clean.append(psnr(shown, clean[j]))
    return {
        "ms_per_frame": statistics.median(times) * 1000,
        "bytes_per_frame": statistics.mean(sizes),
        "psnr_db": statistics.mean(fidelity),
        "psnr_to_clean_db": statistics.mean(to_clean),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    clean = speaking_pictures()
    rng = np.random.default_rng(0)
    noisy = [
        np.clip(p + rng.normal(0.0, NOISE_SIGMA, p.shape), 0, 255).round().astype(np.uint8) for p in clean
    ]
    results: dict[str, dict[str, Any]] = {}
    for source, pictures in (("rendered", clean), ("noisy", noisy)):
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name, options in VARIANTS.items():
                rounds[name].append(encode_twice(options, pictures, clean))
        for name, runs in rounds.items():
            results[f"{source}: {name}"] = {
                key: statistics.median(run[key] for run in runs) for key in runs[0]
            }
    rows = [
        [name, f"{r['ms_per_frame']:.2f}", round(r["bytes_per_frame"]), f"{r['psnr_db']:.2f}", f"{r['psnr_to_clean_db']:.2f}"]
        for name, r in results.items()
    ]
    print_table(
        f"VP8, 512×512 demo avatar speaking, {FPS} fps, {args.rounds} rounds (medians)",
        ["source: options", "ms per frame", "bytes per frame", "PSNR dB", "PSNR to clean dB"],
        rows,
    )
    write_json("vp8", {"server_options": CODEC_OPTIONS, "variants": VARIANTS, "results": results})


if __name__ == "__main__":
    main()
