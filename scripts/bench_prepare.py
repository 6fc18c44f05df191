#!/usr/bin/env python3
"""Avatar preparation time per second of 25 fps video.

A video of the built-in drawn face (512 x 512, or pasted into 1280 x 720 frames) is
prepared with each kind of face-parsing weights: none (the feathered mask), tiny random
ones (what the tests use) and full-size random ones (the layout and compute of MuseTalk's
79999_iter.pth, whose values do not change the time). Landmarks come from mediapipe on the
CPU; DWPose is not measured (its weights are not on these machines).

Each configuration runs `--repeats` times; the table shows the fastest run and the median
(other work on a shared machine only ever slows a run down).

A second table times the VAE latents of the last avatar's crops (what prepare-avatar adds
when MuseTalk's VAE is in models/): tiny random weights, and full-size random weights of
sd-vae-ft-mse's shape (fp16 on CUDA, fp32 on the CPU).

    .venv/bin/python scripts/bench_prepare.py [--seconds 4] [--repeats 3] [--sizes 512 720p] [--device cpu]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from benchkit import print_table, write_json
from server.avatars.face_parsing import REAL_WIDTH, BiSeNet, face_parsing_weights
from server.avatars.preparation import FACES_SHARE, PreparationRequest, Preparer, default_device
from server.avatars.storage import load_prepared
from server.avatars.video import VideoLimits, write_video
from server.lipsync.demo.face import DEMO_FPS, draw_face
from server.lipsync.musetalk.model import dtype_for
from server.lipsync.musetalk.tiny_weights import write_tiny_weights
from server.lipsync.musetalk.vae import SD_VAE_FT_MSE_CONFIG, FaceEncoder, build_vae, load_face_encoder
from server.lipsync.musetalk.weights import MuseTalkWeights
from tests.avatar_files import TINY_BISENET_WIDTH

WEIGHTS = {"none (feathered)": None, "tiny random": TINY_BISENET_WIDTH, "full-size random": REAL_WIDTH}
FRAME_SIZES = {"512": (512, 512), "720p": (1280, 720)}


def frames(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    width, height = size
    out = []
    for i in range(count):
        face = draw_face(i)
        if (width, height) == face.shape[1::-1]:
            out.append(face)
            continue
        canvas = np.full((height, width, 3), 60, np.uint8)
        side = min(height, 600)
        top, left = (height - side) // 2, (width - side) // 2
        canvas[top : top + side, left : left + side] = cv2.resize(face, (side, side))
        out.append(canvas)
    return out


def run(video: Path, root: Path, width: int | None, device: str) -> dict[str, float]:
    models = root / "models"
    if width is not None:
        torch.manual_seed(0)
        path = face_parsing_weights(models)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(BiSeNet(width).state_dict(), path)
    preparer = Preparer(root / "avatars", models, VideoLimits(0.0, 600.0, 4096), 0.1, device)
    marks: dict[str, float] = {}

    def progress(share: float) -> None:
        if share >= FACES_SHARE and "faces" not in marks:
            marks["faces"] = time.monotonic()

    started = time.monotonic()
    result = preparer.prepare(PreparationRequest(video, "bench", force=True), progress)
    finished = time.monotonic()
    seconds_of_video = result.frame_count / result.fps
    return {
        "frames": result.frame_count,
        "seconds": finished - started,
        "per_video_second": (finished - started) / seconds_of_video,
        "faces_per_video_second": (marks["faces"] - started) / seconds_of_video,
        "pictures_per_video_second": (finished - marks["faces"]) / seconds_of_video,
    }


def time_latents(crops: np.ndarray, fps: float, root: Path, device: str, repeats: int) -> list[dict]:
    """Seconds of VAE encoding per second of video, with tiny and full-size random weights."""
    torch_device = torch.device(device)
    dtype = dtype_for(torch_device)
    tiny = load_face_encoder(
        MuseTalkWeights(write_tiny_weights(root / "tiny-models", versions=("1.5",)), "1.5"), torch_device, dtype
    )
    torch.manual_seed(0)
    full = FaceEncoder(build_vae(SD_VAE_FT_MSE_CONFIG, torch_device).to(dtype).eval(), torch_device, "random")
    rows = []
    for name, encoder in (("tiny random", tiny), ("full-size random", full)):
        timings = []
        for _ in range(repeats):
            started = time.monotonic()
            encoder.encode(crops)
            if torch_device.type == "cuda":
                torch.cuda.synchronize()
            timings.append((time.monotonic() - started) / (len(crops) / fps))
        rows.append({"vae": name, "frames": len(crops), "fastest": min(timings), "median": statistics.median(timings)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the video (25 fps)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each configuration")
    parser.add_argument("--sizes", nargs="+", default=list(FRAME_SIZES), choices=list(FRAME_SIZES))
    parser.add_argument("--weights", nargs="+", default=list(WEIGHTS), choices=list(WEIGHTS))
    parser.add_argument("--device", default="", help="torch device for face parsing (default: cuda if any)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # not the missing-weights warning of each run
    device = default_device(args.device)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as folder:
        root = Path(folder)
        for size in args.sizes:
            video = root / f"face-{size}.mp4"
            write_video(video, frames(round(args.seconds * DEMO_FPS), FRAME_SIZES[size]), DEMO_FPS)
            for weights in args.weights:
                runs = [
                    run(video, root / f"{size}-{WEIGHTS[weights]}", WEIGHTS[weights], device)
                    for _ in range(args.repeats)
                ]
                fastest = min(runs, key=lambda r: r["per_video_second"])
                median = statistics.median(r["per_video_second"] for r in runs)
                results.append(
                    {"frame_size": size, "face_parsing": weights, "median_per_video_second": median,
                     "fastest": fastest, "runs": runs}
                )
        crops = load_prepared(root / f"{args.sizes[-1]}-{WEIGHTS[args.weights[-1]]}" / "avatars" / "bench").crops
        latents = time_latents(crops, DEMO_FPS, root, device, args.repeats)
    print_table(
        f"avatar preparation, seconds per second of 25 fps video ({args.seconds:g} s videos, "
        f"{args.repeats} runs each, face parsing on {device}, landmarks: mediapipe on the CPU)",
        ["frames", "face parsing weights", "fastest", "median", "fastest: faces", "fastest: crops, masks"],
        [
            [r["frame_size"], r["face_parsing"], f"{r['fastest']['per_video_second']:.2f}",
             f"{r['median_per_video_second']:.2f}", f"{r['fastest']['faces_per_video_second']:.2f}",
             f"{r['fastest']['pictures_per_video_second']:.2f}"]
            for r in results
        ],
    )
    print_table(
        f"VAE latents of the crops, seconds per second of 25 fps video ({len(crops)} crops, on {device})",
        ["VAE weights", "fastest", "median"],
        [[r["vae"], f"{r['fastest']:.2f}", f"{r['median']:.2f}"] for r in latents],
    )
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else None
    write_json(
        "prepare",
        {"device": device, "gpu": gpu, "video_seconds": args.seconds, "results": results, "latents": latents},
    )


if __name__ == "__main__":
    main()
