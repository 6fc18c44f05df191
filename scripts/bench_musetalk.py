#!/usr/bin/env python3
"""Throughput of the musetalk engine: full-size networks on a GPU, tiny ones on the CPU.

GPU (when CUDA is available): MuseTalk's full-size UNet and sd-vae decoder with random
weights of the real shapes, fp16, at each batch size:
  - networks: one UNet step + VAE decode, frames/s;
  - engine:   `MuseTalkEngine.render` on the built-in 512 x 512 avatar: gather latents and
              audio, the networks, resize and blend on the device, one copy to the host.
It also times whisper-tiny's encoder per 30 s segment and the avatar's preparation.

CPU: tiny random weights written in the official layout and loaded by the engine, run
through the whole engine path (audio features chunk by chunk as sessions ask for them,
then rendering in batches of the engine's default size). A regression figure only.

    .venv/bin/python scripts/bench_musetalk.py [--batch-sizes 1 4 8 16 32] [--skip-cpu] [--skip-gpu]

Prints tables and writes bench-results/musetalk.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchkit import print_table, write_json
from server.lipsync.demo.face import build_demo_avatar
from server.lipsync.engine import Avatar, LoadedAvatar, RenderRequest
from server.lipsync.musetalk.engine import MuseTalkEngine, load_musetalk_engine
from tests.audio_files import speech_like

CHUNK_SECONDS = 2.0  # a session's default chunk_duration
CPU_FPS = 25  # MuseTalk's own frame rate
AVATAR_FRAMES = 8  # of the demo avatar: rendering costs the same, preparing it less


def timed(run: Callable[[], Any], device: torch.device, warmup: int, iterations: int) -> float:
    """Seconds per call of `run`, after `warmup` calls, device work included."""
    for _ in range(warmup):
        run()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(iterations):
        run()
    synchronize(device)
    return (time.perf_counter() - started) / iterations


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_avatar() -> Avatar:
    demo = build_demo_avatar()
    return Avatar("bench", demo.frames[:AVATAR_FRAMES], demo.face_boxes[:AVATAR_FRAMES])


def requests_for(loaded: LoadedAvatar, features: list[torch.Tensor], batch: int) -> list[RenderRequest]:
    count = len(loaded.avatar.frames)
    return [RenderRequest(loaded, i % count, features[i % len(features)]) for i in range(batch)]


def full_size_engine(device: torch.device) -> MuseTalkEngine:
    """The engine around full-size networks with random weights (fp16 on CUDA)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers import WhisperConfig, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from server.lipsync.musetalk.audio import AudioEncoder
    from server.lipsync.musetalk.model import MuseTalkModel, dtype_for
    from server.lipsync.musetalk.unet import MUSETALK_UNET_CONFIG, build_unet
    from server.lipsync.musetalk.vae import SD_VAE_FT_MSE_CONFIG, build_vae

    diffusers_logging.set_verbosity_error()  # not its advice on casting models with .to()
    dtype = dtype_for(device)
    torch.manual_seed(0)
    unet = build_unet(MUSETALK_UNET_CONFIG, device).to(dtype).eval().requires_grad_(False)
    vae = build_vae(SD_VAE_FT_MSE_CONFIG, device).to(dtype).eval().requires_grad_(False)
    with torch.device(device):
        whisper = WhisperEncoder(WhisperConfig()).to(dtype).eval().requires_grad_(False)  # whisper-tiny's shape
    audio = AudioEncoder(WhisperFeatureExtractor(feature_size=80), whisper, device, dtype)
    return MuseTalkEngine(MuseTalkModel("1.5", unet, vae, audio, device, dtype, "random"))


def bench_full_size(device: torch.device, batch_sizes: list[int], iterations: int) -> dict[str, Any]:
    engine = full_size_engine(device)
    model = engine.model
    started = time.perf_counter()
    loaded = engine.load_avatar(bench_avatar())
    prepare_seconds = time.perf_counter() - started

    segment = speech_like(30.0)[::3].copy()  # 30 s at 16 kHz
    whisper_seconds = timed(lambda: model.audio.encode_segment(segment), device, 2, 5)

    features = list(torch.randn(32, 50, 384, device=device, dtype=model.dtype).unbind(0))
    rows = []
    for batch in batch_sizes:
        latents = torch.randn(batch, 8, 32, 32, device=device, dtype=model.dtype)
        audio = torch.randn(batch, 50, 384, device=device, dtype=model.dtype)
        networks = timed(lambda: model.generate(latents, audio), device, 3, iterations)
        requests = requests_for(loaded, features, batch)
        whole = timed(lambda: engine.render(requests), device, 3, iterations)
        rows.append(
            {
                "batch": batch,
                "networks_fps": batch / networks,
                "engine_fps": batch / whole,
                "engine_ms_per_batch": whole * 1000,
            }
        )
    cuda = device.type == "cuda"
    return {
        "device": torch.cuda.get_device_name(device) if cuda else str(device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "avatar_frames": AVATAR_FRAMES,
        "avatar_prepare_seconds": prepare_seconds,
        "whisper_ms_per_30s_segment": whisper_seconds * 1000,
        "batches": rows,
        "memory_peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
    }


def bench_cpu(seconds: float) -> dict[str, Any]:
    from server.lipsync.musetalk.tiny_weights import write_tiny_weights
    from server.lipsync.musetalk.weights import MuseTalkWeights

    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as folder:
        models = write_tiny_weights(Path(folder) / "models", versions=("1.5",))
        engine = load_musetalk_engine(MuseTalkWeights(models, "1.5"), device)
        started = time.perf_counter()
        loaded = engine.load_avatar(bench_avatar())
        prepare_seconds = time.perf_counter() - started

    samples = speech_like(seconds)
    frame_count = int(seconds * CPU_FPS)
    per_chunk = int(CHUNK_SECONDS * CPU_FPS)
    batch = engine.default_max_batch
    engine.render(requests_for(loaded, engine.audio_features(samples, CPU_FPS, range(batch)), batch))  # warm up
    audio_seconds = render_seconds = 0.0
    fresh = samples.copy()  # a new utterance: nothing of it remembered
    for start in range(0, frame_count, per_chunk):
        frames = range(start, min(start + per_chunk, frame_count))
        t0 = time.perf_counter()
        features = engine.audio_features(fresh, CPU_FPS, frames)
        t1 = time.perf_counter()
        for b in range(0, len(features), batch):
            chunk = features[b : b + batch]
            indices = [(start + b + k) % AVATAR_FRAMES for k in range(len(chunk))]
            engine.render([RenderRequest(loaded, i, f) for i, f in zip(indices, chunk)])
        audio_seconds += t1 - t0
        render_seconds += time.perf_counter() - t1
    return {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "utterance_seconds": seconds,
        "fps": CPU_FPS,
        "batch": batch,
        "frames": frame_count,
        "avatar_prepare_seconds": prepare_seconds,
        "audio_features_seconds": audio_seconds,
        "render_seconds": render_seconds,
        "whole_path_fps": frame_count / (audio_seconds + render_seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--iterations", type=int, default=20, help="timed calls per GPU batch size")
    parser.add_argument("--seconds", type=float, default=4.0, help="utterance length for the CPU run")
    parser.add_argument("--skip-gpu", action="store_true")
    parser.add_argument(
        "--full-size-device", default="cuda", help="where the full-size run goes (cpu: only to try the script)"
    )
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()

    results: dict[str, Any] = {"torch": torch.__version__}
    full_size_device = torch.device(args.full_size_device)
    if not args.skip_gpu:
        if full_size_device.type != "cuda" or torch.cuda.is_available():
            gpu = bench_full_size(full_size_device, args.batch_sizes, args.iterations)
            results["gpu"] = gpu
            print_table(
                f"Full-size MuseTalk, random weights, {gpu['dtype']} on {gpu['device']} "
                f"(whisper {gpu['whisper_ms_per_30s_segment']:.1f} ms per 30 s)",
                ["batch", "networks frames/s", "engine frames/s", "engine ms/batch"],
                [
                    [r["batch"], r["networks_fps"], r["engine_fps"], r["engine_ms_per_batch"]]
                    for r in gpu["batches"]
                ],
            )
        else:
            results["gpu"] = {"not_measured": "no CUDA device"}
            print("\nGPU: not measured (no CUDA device)")
    if not args.skip_cpu:
        cpu = bench_cpu(args.seconds)
        results["cpu_tiny"] = cpu
        print_table(
            f"Tiny random weights on the CPU ({cpu['threads']} threads), whole engine path, "
            f"{cpu['utterance_seconds']:.0f} s of speech at {cpu['fps']} fps",
            ["batch", "frames", "audio s", "render s", "frames/s", "avatar prep s"],
            [[cpu["batch"], cpu["frames"], cpu["audio_features_seconds"], cpu["render_seconds"],
              cpu["whole_path_fps"], cpu["avatar_prepare_seconds"]]],
        )
    write_json("musetalk", results)


if __name__ == "__main__":
    main()
