#!/usr/bin/env python3
"""MuseTalk on one GPU, within a time budget: the networks, the engine, the whole server.

With full-size random weights of MuseTalk 1.5's real shapes (UNet 178 GFLOP + sd-vae
decoder 622 GFLOP per 256 x 256 frame, the issue's reference), on one CUDA device:

1. networks — frames/s of the UNet step, of the VAE decoder and of both together, at each
   batch size, in each dtype (fp16, bf16), as they are (eager), in channels_last, and as
   CUDA graphs (captured per batch size; replayed, they cost no Python or launches);
2. engine   — `MuseTalkEngine.render` (gather the batch's latents and audio, the
   networks, resize and blend each face into its 512 x 512 frame, one copy to the host),
   eager and with the networks as a CUDA graph;
3. server   — `avatar-server serve` with the musetalk engine on those weights (written to
   a temporary models folder in the official layout), and N sessions speaking at once,
   received by aiortc peers in several processes (`sessionload.py`), N growing until
   real time breaks;
4. compile  — torch.compile of the UNet and the VAE decoder (modes given), each in a child
   process that is stopped when the budget runs out: compiling takes minutes.

Every step checks the budget first and is skipped (and listed) when it is spent, so the
run ends on time with what was measured; the JSON is rewritten after every measurement.
`--smoke` runs the same code with tiny networks on the CPU in well under a minute: a
proof that the paths work, not a measurement.

    ./scripts/bench_gpu [--budget-seconds 280] [--phases networks engine server compile]
    ./scripts/bench_gpu --phases compile --compile-modes max-autotune reduce-overhead
    .venv/bin/python scripts/bench_gpu.py --smoke

(`./scripts/bench_gpu` runs it in a private network namespace, as the tests; run directly,
every peer is on loopback with no STUN/TURN.) Prints tables and writes
bench-results/gpu.json (gpu-smoke.json with --smoke).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import queue
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch

from benchkit import RESULTS_DIR, ROOT, UNLIMITED_CAPACITY, print_table, server_process
from sessionload import speak_together
from server.lipsync.demo.face import build_demo_avatar
from server.lipsync.engine import Avatar, RenderRequest
from server.lipsync.musetalk.engine import MuseTalkEngine
from server.lipsync.musetalk.unet import MUSETALK_UNET_CONFIG, TIMESTEP, build_unet
from server.lipsync.musetalk.vae import LATENT_CHANNELS, LATENT_SIZE, SD_VAE_FT_MSE_CONFIG, build_vae, decode_faces
from tests.audio_files import encode, speech_like

REFERENCE_GFLOP_PER_FRAME = {"unet": 178.0, "vae": 622.0}
"""The issue's figures at 256 x 256: 0.80 TFLOP per frame."""
DENSE_FP16_TFLOPS = {"H100": 989.0, "H200": 989.0}
"""Dense fp16 tensor-core peak (SXM) by device name, for the share of peak used."""
GOAL_FRAMES_PER_SECOND = 500
GOAL_SESSIONS = 20
AUDIO_FEATURES = (50, 384)  # per frame: 10 whisper frames x 5 layers, 384 wide
AVATAR_FRAMES = 8
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
MIN_SECONDS_PER_POINT = 0.25
"""Each point is timed for at least this long (and at least MIN_ITERATIONS calls)."""
MIN_ITERATIONS = 3
WARMUP_CALLS = 2
GRAPH_WARMUP_CALLS = 3
# Shares of the budget by which each phase must have started (later ones get the rest).
PHASE_DEADLINES = {"networks": 0.0, "engine": 0.3, "server": 0.45, "compile": 0.85}
COMPILE_MIN_SECONDS = {"inductor": 60.0}
"""Budget a compile mode needs left to be worth starting (other backends: a few seconds)."""
OTHER_BACKEND_MIN_SECONDS = 10.0
SERVER_START_SECONDS = 180.0
"""Waiting for the server's first answer: loading 2 GB of weights onto the device."""
NETNS_VARIABLE = "AVATAR_TEST_NETNS"  # set by scripts/netns.sh inside its namespace


@dataclass(frozen=True)
class Plan:
    """What to measure: the full-size run on CUDA, or the smoke run on the CPU."""

    device: torch.device
    unet_config: dict[str, Any]
    vae_config: dict[str, Any]
    whisper_config: dict[str, Any]
    dtypes: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    sessions: tuple[int, ...]
    utterance_seconds: float
    fps: int
    playback_fps: int
    receiver_processes: int
    compile_modes: tuple[str, ...]
    compile_batch_sizes: tuple[int, ...]
    compile_backend: str
    server_max_batch: int
    smoke: bool


class Budget:
    """Wall time left for the run; phases and points check it before they start."""

    def __init__(self, seconds: float, strict: bool = True) -> None:
        self.seconds = seconds
        self.strict = strict
        """False for a smoke run: each phase's first point runs even past the budget."""
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def spent(self, share: float = 1.0) -> bool:
        """True when more than `share` of the budget is used."""
        return self.elapsed() > share * self.seconds

    def phase_over(self, phase: str, measured: bool) -> bool:
        """Whether a point of the phase before `phase` should be skipped: once its share is
        spent, except for the phase's first point while any budget is left (past it too,
        when not strict: a smoke run is for running every path once)."""
        if not measured:
            return self.strict and self.left() <= 0
        return self.spent(PHASE_DEADLINES[phase])


@dataclass
class Results:
    """The run's JSON, rewritten after every measurement so a cut-off run keeps its figures."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    def save(self) -> None:
        self.path.parent.mkdir(exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(self.data, indent=2, default=str))
        partial.replace(self.path)

    def skip(self, what: str, why: str) -> None:
        self.data.setdefault("skipped", []).append({"what": what, "why": why})
        print(f"  skipped {what}: {why}", flush=True)
        self.save()


# --- timing --------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    warmup_calls: int = WARMUP_CALLS
    min_iterations: int = MIN_ITERATIONS
    min_seconds: float = MIN_SECONDS_PER_POINT


SMOKE_TIMING = Timing(1, 1, 0.0)
TIMING = Timing()
"""Set from the plan in `main` (and in compile children): smoke runs time one call."""


def seconds_per_call(run: Callable[[], Any], device: torch.device) -> float:
    """Seconds per call of `run` after a warm-up, device work included."""
    for _ in range(TIMING.warmup_calls):
        run()
    synchronize(device)
    calls, started = 0, time.perf_counter()
    while calls < TIMING.min_iterations or time.perf_counter() - started < TIMING.min_seconds:
        run()
        calls += 1
        if calls % MIN_ITERATIONS == 0:
            synchronize(device)
    synchronize(device)
    return (time.perf_counter() - started) / calls


class GraphedCall:
    """`fn(*inputs)` captured as one CUDA graph: a call copies its inputs into the captured
    ones and replays the graph; the output tensor is the same one every call."""

    def __init__(self, fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor]) -> None:
        self.inputs = [tensor.clone() for tensor in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
            for _ in range(GRAPH_WARMUP_CALLS):
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = fn(*self.inputs)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        for captured, given in zip(self.inputs, inputs):
            if captured.data_ptr() != given.data_ptr():
                captured.copy_(given)
        self.graph.replay()
        return self.output


# --- the networks --------------------------------------------------------------------------


@dataclass
class Networks:
    unet: torch.nn.Module
    vae: torch.nn.Module
    device: torch.device
    dtype: torch.dtype

    def inputs(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        latents = torch.randn(batch, 2 * LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE, device=self.device, dtype=self.dtype)
        audio = torch.randn(batch, *AUDIO_FEATURES, device=self.device, dtype=self.dtype)
        return latents, audio  # [B, 8, 32, 32], [B, 50, 384]

    def unet_step(self, latents: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        timestep = torch.full((len(latents),), TIMESTEP, device=self.device)
        return self.unet(latents, timestep, encoder_hidden_states=audio).sample  # [B, 4, 32, 32]

    def decode(self, predicted: torch.Tensor) -> torch.Tensor:
        return decode_faces(self.vae, predicted)  # [B, 3, 256, 256]

    def generate(self, latents: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.decode(self.unet_step(latents, audio))

    def memory_format(self, layout: torch.memory_format) -> None:
        self.unet.to(memory_format=layout)
        self.vae.to(memory_format=layout)


def faster_layout(rows: list[dict[str, Any]]) -> str:
    """eager or channels_last: the faster one at the largest batch both were timed at."""
    by = {(r["variant"], r["batch"]): r["networks_fps"] for r in rows}
    common = [b for (v, b) in by if v == "eager" and ("channels_last", b) in by]
    if not common:
        return "eager"
    batch = max(common)
    return "channels_last" if by[("channels_last", batch)] > by[("eager", batch)] else "eager"


def build_networks(plan: Plan, dtype: torch.dtype) -> Networks:
    """The UNet and VAE with random weights (diffusers' initialisation) on the plan's device."""
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    torch.manual_seed(0)
    unet = build_unet(plan.unet_config, plan.device).to(dtype).eval().requires_grad_(False)
    vae = build_vae(plan.vae_config, plan.device).to(dtype).eval().requires_grad_(False)
    return Networks(unet, vae, plan.device, dtype)


def flops_per_frame(plan: Plan) -> dict[str, float]:
    """GFLOP per frame of each network, counted by torch on one batch-1 call on the meta
    device (shapes only: no memory, no time). Full size: 177.8 + 622.2, the issue's figures."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = torch.device("meta")
    networks = Networks(build_unet(plan.unet_config, meta), build_vae(plan.vae_config, meta), meta, torch.float32)
    latents, audio = networks.inputs(1)
    counted = {}
    with torch.inference_mode():
        predicted = networks.unet_step(latents, audio)
        for name, run in (("unet", lambda: networks.unet_step(latents, audio)), ("vae", lambda: networks.decode(predicted))):
            counter = FlopCounterMode(display=False)
            with counter:
                run()
            counted[name] = counter.get_total_flops() / 1e9
    return counted


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error)


def free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def network_points(networks: Networks, batch: int, variant: str) -> dict[str, float]:
    """Frames/s of the UNet step, the decoder and both, at `batch`, for one variant."""
    latents, audio = networks.inputs(batch)
    with torch.inference_mode():
        predicted = networks.unet_step(latents, audio)
        if variant == "channels_last":
            latents = latents.contiguous(memory_format=torch.channels_last)
            predicted = predicted.contiguous(memory_format=torch.channels_last)
        calls: dict[str, Callable[[], Any]]
        if variant == "cuda_graph":
            unet = GraphedCall(networks.unet_step, (latents, audio))
            vae = GraphedCall(networks.decode, (predicted,))
            both = GraphedCall(networks.generate, (latents, audio))
            calls = {"unet": lambda: unet(latents, audio), "vae": lambda: vae(predicted), "networks": lambda: both(latents, audio)}
        else:
            calls = {
                "unet": lambda: networks.unet_step(latents, audio),
                "vae": lambda: networks.decode(predicted),
                "networks": lambda: networks.generate(latents, audio),
            }
        points = {f"{name}_fps": batch / seconds_per_call(run, networks.device) for name, run in calls.items()}
    del calls
    free_device_memory(networks.device)
    return points


def bench_networks(plan: Plan, budget: Budget, results: Results) -> None:
    section = results.data.setdefault("networks", {})
    variants = ["eager", "channels_last"] + (["cuda_graph"] if plan.device.type == "cuda" else [])
    if plan.device.type != "cuda":
        results.skip("networks/cuda_graph", "needs CUDA")
    measured = False
    for dtype_name in plan.dtypes:
        if budget.phase_over("engine", measured):
            results.skip(f"networks/{dtype_name}", "over the phase's share of the budget")
            continue
        entry = section.setdefault(dtype_name, {"rows": []})
        try:
            networks = build_networks(plan, DTYPES[dtype_name])
            entry["gflop_per_frame"] = flops_per_frame(plan)
        except Exception as error:
            entry["error"] = f"{type(error).__name__}: {error}"
            results.skip(f"networks/{dtype_name}", entry["error"])
            continue
        results.save()
        for variant in variants:
            if variant == "channels_last":
                networks.memory_format(torch.channels_last)
            if variant == "cuda_graph":  # captured in the faster of the two layouts
                layout = faster_layout(entry["rows"])
                entry["cuda_graph_layout"] = layout
                networks.memory_format(torch.channels_last if layout == "channels_last" else torch.contiguous_format)
            for batch in plan.batch_sizes:
                if budget.phase_over("engine", measured):
                    results.skip(f"networks/{dtype_name}/{variant}/batch {batch}", "over the phase's share of the budget")
                    break
                try:
                    points = network_points(networks, batch, variant)
                except Exception as error:
                    reason = "out of memory" if is_out_of_memory(error) else f"{type(error).__name__}: {error}"
                    free_device_memory(plan.device)
                    results.skip(f"networks/{dtype_name}/{variant}/batch {batch} and larger", reason)
                    break
                row = {"variant": variant, "batch": batch, **points}
                entry["rows"].append(row)
                measured = True
                print(
                    f"  {dtype_name} {variant:13} batch {batch:3}: UNet {points['unet_fps']:8.1f}  "
                    f"VAE {points['vae_fps']:8.1f}  both {points['networks_fps']:8.1f} frames/s",
                    flush=True,
                )
                results.save()
        del networks
        free_device_memory(plan.device)


# --- the engine ----------------------------------------------------------------------------


def bench_avatar() -> Avatar:
    demo = build_demo_avatar()
    return Avatar("bench", demo.frames[:AVATAR_FRAMES], demo.face_boxes[:AVATAR_FRAMES])


def engine_around(networks: Networks, whisper_config: dict[str, Any]) -> MuseTalkEngine:
    """The real engine around the random networks, with a whisper encoder of `whisper_config`."""
    from transformers import WhisperConfig, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from server.lipsync.musetalk.audio import AudioEncoder
    from server.lipsync.musetalk.model import MuseTalkModel

    with torch.device(networks.device):
        whisper = WhisperEncoder(WhisperConfig(**whisper_config)).to(networks.dtype).eval().requires_grad_(False)
    audio = AudioEncoder(WhisperFeatureExtractor(feature_size=80), whisper, networks.device, networks.dtype)
    model = MuseTalkModel("1.5", networks.unet, networks.vae, audio, networks.device, networks.dtype, "random")
    return MuseTalkEngine(model)


def bench_engine(plan: Plan, budget: Budget, results: Results) -> None:
    """The whole render path at each batch size, in the dtype the server runs (the first)."""
    dtype_name = plan.dtypes[0]
    section = results.data.setdefault("engine", {"dtype": dtype_name, "avatar": "512x512 drawn face", "rows": []})
    networks = build_networks(plan, DTYPES[dtype_name])
    engine = engine_around(networks, plan.whisper_config)
    with torch.inference_mode():
        started = time.perf_counter()
        loaded = engine.load_avatar(bench_avatar())
        section["avatar_load_seconds"] = time.perf_counter() - started
        segment = speech_like(30.0)[::3].copy()  # 30 s at 16 kHz
        section["whisper_ms_per_30s_segment"] = 1000 * seconds_per_call(
            lambda: engine.model.audio.encode_segment(segment), plan.device
        )
    results.save()
    variants = ["eager"] + (["cuda_graph"] if plan.device.type == "cuda" else [])
    measured = False
    for variant in variants:
        for batch in plan.batch_sizes:
            if budget.phase_over("server", measured):
                results.skip(f"engine/{variant}/batch {batch}", "over the phase's share of the budget")
                break
            features = list(torch.randn(batch, *AUDIO_FEATURES, device=plan.device, dtype=networks.dtype).unbind(0))
            requests = [RenderRequest(loaded, i % AVATAR_FRAMES, features[i]) for i in range(batch)]
            try:
                with torch.inference_mode():
                    if variant == "cuda_graph":
                        graphed = GraphedCall(networks.generate, networks.inputs(batch))
                        engine.model.generate = graphed  # type: ignore[method-assign]
                    seconds = seconds_per_call(lambda: engine.render(requests), plan.device)
            except Exception as error:
                reason = "out of memory" if is_out_of_memory(error) else f"{type(error).__name__}: {error}"
                results.skip(f"engine/{variant}/batch {batch} and larger", reason)
                break
            finally:
                engine.model.__dict__.pop("generate", None)
                free_device_memory(plan.device)
            section["rows"].append({"variant": variant, "batch": batch, "fps": batch / seconds, "ms_per_batch": 1000 * seconds})
            measured = True
            print(f"  engine {dtype_name} {variant:10} batch {batch:3}: {batch / seconds:8.1f} frames/s", flush=True)
            results.save()
    if plan.device.type == "cuda":
        section["memory_peak_gib"] = torch.cuda.max_memory_allocated(plan.device) / 2**30
    del engine, networks
    free_device_memory(plan.device)


# --- the whole server ----------------------------------------------------------------------


def write_weights(plan: Plan, models: Path) -> None:
    from server.lipsync.musetalk.tiny_weights import write_full_size_weights, write_tiny_weights

    if plan.smoke:
        write_tiny_weights(models, versions=("1.5",))
    else:
        write_full_size_weights(models, device=str(plan.device))


@contextmanager
def musetalk_server(plan: Plan, folder: Path, sessions: int) -> Iterator[Any]:
    env = {
        "LIPSYNC_ENGINE": "musetalk",
        "LIPSYNC_DEVICE": str(plan.device),
        "MUSETALK_VERSION": "1.5",
        "MODELS_DIR": str(folder / "models"),
        "AVATARS_DIR": str(folder / "avatars"),
        "MAX_SESSIONS": str(sessions + 1),
        **UNLIMITED_CAPACITY,  # this benchmark finds the capacity: nothing may refuse before
    }
    if plan.server_max_batch:
        env["LIPSYNC_MAX_BATCH"] = str(plan.server_max_batch)
    with server_process(env, start_timeout=SERVER_START_SECONDS) as server:
        yield server


def bench_server(plan: Plan, budget: Budget, results: Results) -> None:
    section = results.data.setdefault("server", {
        "fps": plan.fps, "playback_fps": plan.playback_fps, "utterance_seconds": plan.utterance_seconds,
        "receiver_processes": plan.receiver_processes, "avatar": "demo (512x512)",
        "network": "private namespace" if os.environ.get(NETNS_VARIABLE) == "1" else "loopback",
        "steps": [],
    })
    params = {"avatar_id": "demo", "fps": plan.fps, "playback_fps": plan.playback_fps}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as name:
        folder = Path(name)
        started = time.perf_counter()
        write_weights(plan, folder / "models")
        section["weights_write_seconds"] = time.perf_counter() - started
        audio_file = folder / "speech.wav"
        audio_file.write_bytes(encode(speech_like(plan.utterance_seconds, bursts=[(0.0, plan.utterance_seconds)]), "wav"))
        short = folder / "short.wav"
        short.write_bytes(encode(speech_like(1.0, bursts=[(0.0, 1.0)]), "wav"))
        started = time.perf_counter()
        with musetalk_server(plan, folder, max(plan.sessions)) as server:
            section["server_start_seconds"] = time.perf_counter() - started
            section["health"] = httpx.get(f"{server.url}/health", timeout=10).json()
            if not plan.smoke:  # one session first: prepares the avatar, warms the device
                warm = asyncio.run(speak_together(server.url, 1, 1, params, short, 1.0))
                section["warm_up"] = warm.summary(plan.fps)
                results.save()
            for count in plan.sessions:
                expected = plan.utterance_seconds + 10 + count * 0.2
                if section["steps"] and (budget.left() < expected or budget.spent(PHASE_DEADLINES["compile"])):
                    results.skip(f"server/{count} sessions and more", "over the budget")
                    break
                processes = min(plan.receiver_processes, count)
                outcome = asyncio.run(
                    speak_together(server.url, count, processes, params, audio_file, plan.utterance_seconds)
                )
                step = outcome.summary(plan.fps)
                section["steps"].append(step)
                results.save()
                print(
                    f"  {count:3} sessions: {'real time' if step['real_time'] else 'BROKEN'}, min "
                    f"{step['min_video_fps']:.1f} fps, {step['aggregate_frames_per_second']:.0f} frames/s, first speech "
                    f"p95 {step['first_speech_p95_ms'] or float('nan'):.0f} ms {'; '.join(step['problems'])}",
                    flush=True,
                )
                if not step["real_time"]:
                    break
            section["health_after"] = httpx.get(f"{server.url}/health", timeout=10).json()
    held = [s["sessions"] for s in section["steps"] if s["real_time"]]
    section["most_sessions_in_real_time"] = max(held, default=0)
    results.save()


# --- torch.compile -------------------------------------------------------------------------


def _compile_child(plan: Plan, mode: str, dtype_name: str, out: multiprocessing.Queue) -> None:
    """In a child process: compile the UNet step and the decoder, time them at each batch."""
    global TIMING
    TIMING = SMOKE_TIMING if plan.smoke else Timing()
    try:
        if plan.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        networks = build_networks(plan, DTYPES[dtype_name])
        options: dict[str, Any] = {"backend": plan.compile_backend}
        if plan.compile_backend == "inductor":
            options["mode"] = mode
        unet_step = torch.compile(networks.unet_step, dynamic=False, **options)
        decode = torch.compile(networks.decode, dynamic=False, **options)
        for batch in plan.compile_batch_sizes:
            latents, audio = networks.inputs(batch)
            with torch.inference_mode():
                started = time.perf_counter()
                predicted = unet_step(latents, audio).clone()
                decode(predicted)
                synchronize(plan.device)
                compile_seconds = time.perf_counter() - started
                row = {
                    "mode": mode, "dtype": dtype_name, "batch": batch, "compile_seconds": compile_seconds,
                    "unet_fps": batch / seconds_per_call(lambda: unet_step(latents, audio), plan.device),
                    "vae_fps": batch / seconds_per_call(lambda: decode(predicted), plan.device),
                }
                row["networks_fps"] = batch / seconds_per_call(lambda: decode(unet_step(latents, audio)), plan.device)
            out.put(row)
    except Exception as error:
        out.put({"mode": mode, "dtype": dtype_name, "error": f"{type(error).__name__}: {error}",
                 "trace": traceback.format_exc(limit=3)})
    out.put(None)


def bench_compile(plan: Plan, budget: Budget, results: Results) -> None:
    section = results.data.setdefault("compile", {"backend": plan.compile_backend, "rows": []})
    context = multiprocessing.get_context("spawn")
    for mode in plan.compile_modes:
        dtype_name = plan.dtypes[0]
        needed = COMPILE_MIN_SECONDS.get(plan.compile_backend, OTHER_BACKEND_MIN_SECONDS)
        if budget.left() < needed:
            results.skip(f"compile/{mode}", f"under {needed:.0f} s of budget left (run --phases compile)")
            continue
        out = context.Queue()
        child = context.Process(target=_compile_child, args=(plan, mode, dtype_name, out), daemon=True)
        child.start()
        deadline = time.monotonic() + budget.left() - 2
        finished = False
        while time.monotonic() < deadline:
            try:
                row = out.get(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            except queue.Empty:
                if not child.is_alive():
                    break
                continue
            if row is None:
                finished = True
                break
            section["rows"].append(row)
            results.save()
            if "error" in row:
                print(f"  compile {mode}: {row['error']}", flush=True)
            else:
                print(
                    f"  compile {mode} {dtype_name} batch {row['batch']}: compiled in {row['compile_seconds']:.0f} s, "
                    f"UNet {row['unet_fps']:.1f}, VAE {row['vae_fps']:.1f}, both {row['networks_fps']:.1f} frames/s",
                    flush=True,
                )
        if not finished:
            results.skip(f"compile/{mode} (rest)", "over the budget: the child was stopped")
        if child.is_alive():
            child.terminate()
        child.join(5)
        if child.is_alive():
            child.kill()
            child.join()


# --- output --------------------------------------------------------------------------------


def best(rows: list[dict[str, Any]], key: str, **match: Any) -> dict[str, Any] | None:
    chosen = [r for r in rows if all(r.get(k) == v for k, v in match.items()) and key in r]
    return max(chosen, key=lambda r: r[key], default=None)


def print_tables(plan: Plan, results: Results) -> None:
    data = results.data
    for dtype_name, entry in data.get("networks", {}).items():
        rows = entry.get("rows", [])
        if not rows:
            continue
        flops = entry.get("gflop_per_frame", {})
        per_frame = sum(flops.values()) or sum(REFERENCE_GFLOP_PER_FRAME.values())
        variants = sorted({r["variant"] for r in rows}, key=["eager", "channels_last", "cuda_graph"].index)
        table = []
        for batch in plan.batch_sizes:
            at = {r["variant"]: r for r in rows if r["batch"] == batch}
            if not at:
                continue
            cells: list[Any] = [batch]
            for name in ("unet", "vae", "networks"):
                cells += [at[v][f"{name}_fps"] if v in at else "-" for v in variants]
            top = max(r["networks_fps"] for r in at.values())
            cells += [f"{top * per_frame / 1000:.3g}"]
            table.append(cells)
        short = {"eager": "eager", "channels_last": "cl", "cuda_graph": "graph"}
        headers = ["batch"] + [f"{n} {short[v]}" for n in ("UNet", "VAE", "both") for v in variants] + ["best TFLOP/s"]
        print_table(
            f"Networks, frames/s, {dtype_name} on {data['device']} ({flops.get('unet', 0):.3g} + "
            f"{flops.get('vae', 0):.3g} GFLOP per frame counted; the issue's reference 178 + 622)",
            headers, table,
        )
    engine = data.get("engine", {})
    if engine.get("rows"):
        variants = sorted({r["variant"] for r in engine["rows"]})
        table = []
        for batch in plan.batch_sizes:
            at = {r["variant"]: r for r in engine["rows"] if r["batch"] == batch}
            if at:
                table.append([batch] + [at[v]["fps"] if v in at else "-" for v in variants])
        print_table(
            f"Whole engine (render: networks + blend into 512x512 + host copy), frames/s, {engine['dtype']}; "
            f"whisper {engine.get('whisper_ms_per_30s_segment', float('nan')):.1f} ms per 30 s",
            ["batch"] + variants, table,
        )
    server = data.get("server", {})
    if server.get("steps"):
        print_table(
            f"Whole server, musetalk engine, N sessions speaking {server['utterance_seconds']:g} s at once "
            f"(fps {server['fps']}, playback {server['playback_fps']}; receivers: {server['receiver_processes']} "
            f"processes, {server['network']})",
            ["sessions", "real time", "min fps", "max freeze ms", "late frames", "audio holds",
             "first speech p95 ms", "frames/s"],
            [
                [s["sessions"], "yes" if s["real_time"] else "no", s["min_video_fps"], s["max_freeze_ms"] or "-",
                 s["video_frames_late"], s["audio_holds"], s["first_speech_p95_ms"] or "-",
                 s["aggregate_frames_per_second"]]
                for s in server["steps"]
            ],
        )
    compiled = [r for r in data.get("compile", {}).get("rows", []) if "error" not in r]
    if compiled:
        print_table(
            f"torch.compile ({data['compile']['backend']}), frames/s",
            ["mode", "dtype", "batch", "compile s", "UNet", "VAE", "both"],
            [[r["mode"], r["dtype"], r["batch"], r["compile_seconds"], r["unet_fps"], r["vae_fps"], r["networks_fps"]]
             for r in compiled],
        )
    summary = summarise(results)
    data["summary"] = summary
    results.save()
    print("\nSummary: " + json.dumps(summary))


def summarise(results: Results) -> dict[str, Any]:
    data = results.data
    rows = [dict(r, dtype=d) for d, e in data.get("networks", {}).items() for r in e.get("rows", [])]
    top = best(rows, "networks_fps")
    engine = best(data.get("engine", {}).get("rows", []), "fps")
    server = data.get("server", {})
    peak = data.get("dense_fp16_peak_tflops")
    if top is not None:
        flops = data["networks"][top["dtype"]].get("gflop_per_frame", REFERENCE_GFLOP_PER_FRAME)
        top["tflops"] = top["networks_fps"] * sum(flops.values()) / 1000
        top["share_of_fp16_peak"] = top["tflops"] / peak if peak else None
    return {
        "best_networks_fps": top and {
            k: top[k] for k in ("dtype", "variant", "batch", "networks_fps", "tflops", "share_of_fp16_peak")
        },
        "best_engine_fps": engine and {k: engine[k] for k in ("variant", "batch", "fps")},
        "most_sessions_in_real_time": server.get("most_sessions_in_real_time"),
        "goals": {"frames_per_second": GOAL_FRAMES_PER_SECOND, "sessions_at_25_fps": GOAL_SESSIONS},
        "elapsed_seconds": data.get("elapsed_seconds"),
    }


# --- main ----------------------------------------------------------------------------------


def make_plan(args: argparse.Namespace) -> Plan:
    from server.lipsync.musetalk.tiny_weights import (
        TINY_UNET_CONFIG,
        TINY_VAE_CONFIG,
        TINY_WHISPER_CONFIG,
        WHISPER_TINY_CONFIG,
    )

    cuda = torch.cuda.is_available() and not args.smoke
    if args.smoke:
        device = torch.device("cpu")
        defaults = {"dtypes": ("fp32", "bf16"), "batch_sizes": (1, 2), "sessions": (1, 2), "seconds": 1.0, "fps": 10}
    else:
        device = torch.device(args.device or ("cuda" if cuda else "cpu"))
        defaults = {
            "dtypes": ("fp16", "bf16") if device.type == "cuda" else ("fp32",),
            "batch_sizes": (1, 2, 4, 8, 16, 24, 32, 48, 64),
            "sessions": (1, 8, 16, 20, 24, 32, 48, 64),
            "seconds": 6.0,
            "fps": 25,
        }
    return Plan(
        device=device,
        unet_config=TINY_UNET_CONFIG if args.smoke else MUSETALK_UNET_CONFIG,
        vae_config=TINY_VAE_CONFIG if args.smoke else SD_VAE_FT_MSE_CONFIG,
        whisper_config=TINY_WHISPER_CONFIG if args.smoke else WHISPER_TINY_CONFIG,
        dtypes=tuple(args.dtypes or defaults["dtypes"]),
        batch_sizes=tuple(args.batch_sizes or defaults["batch_sizes"]),
        sessions=tuple(args.sessions or defaults["sessions"]),
        utterance_seconds=args.utterance_seconds or defaults["seconds"],
        fps=args.fps or defaults["fps"],
        playback_fps=args.playback_fps or args.fps or defaults["fps"],
        receiver_processes=args.receiver_processes or max(1, min(8, (os.cpu_count() or 2) // 2)),
        compile_modes=tuple(args.compile_modes if args.compile_modes is not None else
                            (() if args.smoke else ("reduce-overhead", "max-autotune-no-cudagraphs"))),
        compile_batch_sizes=tuple(args.compile_batch_sizes or ((2,) if args.smoke else (16, 64))),
        compile_backend=args.compile_backend,
        server_max_batch=args.server_max_batch,
        smoke=args.smoke,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny networks on the CPU: the code paths in < 1 min")
    parser.add_argument("--budget-seconds", type=float, default=None, help="wall time for everything (280; smoke 50)")
    parser.add_argument("--phases", nargs="+", choices=list(PHASE_DEADLINES), default=list(PHASE_DEADLINES))
    parser.add_argument("--device", default=None, help="default: cuda when available")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=None, help="the first one also runs the engine")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--sessions", type=int, nargs="+", default=None, help="session counts, in the order tried")
    parser.add_argument("--utterance-seconds", type=float, default=None)
    parser.add_argument("--fps", type=int, default=None, help="session fps (25; smoke 10)")
    parser.add_argument("--playback-fps", type=int, default=None, help="default: --fps")
    parser.add_argument("--receiver-processes", type=int, default=None)
    parser.add_argument("--server-max-batch", type=int, default=0, help="LIPSYNC_MAX_BATCH (0: the engine's)")
    parser.add_argument("--compile-modes", nargs="*", default=None,
                        help="torch.compile modes (default reduce-overhead max-autotune-no-cudagraphs; none with --smoke)")
    parser.add_argument("--compile-batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--compile-backend", default="inductor", help="inductor, or e.g. eager to try the path")
    parser.add_argument("--out", type=Path, default=None, help="default: bench-results/gpu.json (gpu-smoke.json)")
    args = parser.parse_args(argv)

    plan = make_plan(args)
    global TIMING
    TIMING = SMOKE_TIMING if plan.smoke else Timing()
    budget = Budget(args.budget_seconds or (50.0 if plan.smoke else 280.0), strict=not plan.smoke)
    results = Results(args.out or RESULTS_DIR / ("gpu-smoke.json" if plan.smoke else "gpu.json"))
    cuda = plan.device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # convolutions pick their fastest kernels per shape
        name = torch.cuda.get_device_name(plan.device)
    else:
        name = f"cpu ({torch.get_num_threads()} threads)"
    results.data.update({
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "torch": torch.__version__,
        "device": name,
        "smoke": plan.smoke,
        "budget_seconds": budget.seconds,
        "shapes": "tiny" if plan.smoke else "MuseTalk 1.5 full size",
        "reference_gflop_per_frame": REFERENCE_GFLOP_PER_FRAME,
        "dense_fp16_peak_tflops": next((v for k, v in DENSE_FP16_TFLOPS.items() if k in name), None),
    })
    if not cuda and not plan.smoke:
        print("No CUDA device: full-size networks on the CPU take seconds per frame; use --smoke to try the paths.")
    print(f"bench_gpu: {name}, budget {budget.seconds:.0f} s, phases {' '.join(args.phases)}", flush=True)
    phases = {"networks": bench_networks, "engine": bench_engine, "server": bench_server, "compile": bench_compile}
    for phase in args.phases:
        if phase == "compile" and not plan.compile_modes:
            continue
        if budget.strict and budget.left() <= 0:
            results.skip(phase, "over the budget")
            continue
        print(f"\n{phase} (at {budget.elapsed():.0f} s)", flush=True)
        started = time.perf_counter()
        try:
            phases[phase](plan, budget, results)
        except Exception as error:  # one phase failing leaves the others' figures
            results.data.setdefault("errors", {})[phase] = traceback.format_exc(limit=5)
            print(f"  {phase} failed: {type(error).__name__}: {error}", flush=True)
        results.data.setdefault("phase_seconds", {})[phase] = time.perf_counter() - started
        results.save()
    results.data["elapsed_seconds"] = budget.elapsed()
    print_tables(plan, results)
    print(f"\nwrote {results.path.relative_to(ROOT) if results.path.is_relative_to(ROOT) else results.path}")
    return 0 if not results.data.get("errors") else 1


if __name__ == "__main__":
    sys.exit(main())
