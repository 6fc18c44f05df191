"""MuseTalk's weight files in `models/`, in MuseTalk's own layout, and checks on them.

An operator can copy the `models/` folder of a MuseTalk checkout as it is. The files, and
where MuseTalk's `download_weights.sh` gets them (`scripts/download_models.sh` fetches the
same ones):

    musetalkV15/musetalk.json, unet.pth        TMElyralab/MuseTalk      (1.5 UNet)
    musetalk/musetalk.json, pytorch_model.bin  TMElyralab/MuseTalk      (1.0 UNet)
    sd-vae/config.json, diffusion_pytorch_model.bin (or .safetensors)
                                                stabilityai/sd-vae-ft-mse
    whisper/config.json, pytorch_model.bin (or model.safetensors), preprocessor_config.json
                                                openai/whisper-tiny

The checks here are cheap (no model is built): each file is present, JSON files parse and
describe MuseTalk's shapes, checkpoints are whole containers. Loading the models checks
the rest (every tensor name and shape) and reports through the same `WeightsError`.

`python -m server.lipsync.musetalk.weights manifest` prints `models/manifest.json`;
`... check [MODELS_DIR [VERSION ...]]` checks a folder, loading the models on the CPU.
"""

from __future__ import annotations

import json
import struct
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERSIONS = ("1.5", "1.0")
"""MuseTalk releases this engine runs, newest first (`auto` takes the first complete one)."""

DOWNLOAD_HINT = (
    "Get them with scripts/download_models.sh, or copy the models/ folder of a MuseTalk "
    "checkout (models/README.md lists the files and their sources)."
)

HF_MUSETALK = "TMElyralab/MuseTalk"
HF_SD_VAE = "stabilityai/sd-vae-ft-mse"
HF_WHISPER_TINY = "openai/whisper-tiny"
# Avatar preparation's optional weights (server/avatars reads them; the engine does not).
HF_FACE_PARSING = "ManyOtherFunctions/face-parse-bisent"
HF_DWPOSE = "yzd-v/DWPose"

# The first bytes of a checkpoint saved by torch.save: a zip archive (PyTorch >= 1.6) or
# a bare pickle (older PyTorch, protocol 2+ starts with 0x80).
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_MAGIC = b"\x80"
# safetensors: an 8-byte little-endian header length, then a JSON header.
SAFETENSORS_HEADER_BYTES = 8
SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class WeightFile:
    """One file of the layout: where it lives and where it comes from."""

    path: str
    """Relative to the models folder, '/'-separated."""
    component: str
    """unet-1.5, unet-1.0, vae or whisper."""
    repo: str
    """HuggingFace repository it is downloaded from."""
    repo_path: str
    """Its path in that repository."""
    expect: Mapping[str, Any] = field(default_factory=dict)
    """For JSON files: keys that must hold these values for MuseTalk's shapes."""
    alternatives: tuple[str, ...] = ()
    """Other accepted paths for the same content (another serialisation)."""

    @property
    def kind(self) -> str:
        if self.path.endswith(".json"):
            return "json"
        if self.path.endswith(".safetensors"):
            return "safetensors"
        return "checkpoint"


UNET_EXPECT = {"in_channels": 8, "out_channels": 4, "cross_attention_dim": 384}

MANIFEST: tuple[WeightFile, ...] = (
    WeightFile("musetalkV15/musetalk.json", "unet-1.5", HF_MUSETALK, "musetalkV15/musetalk.json", UNET_EXPECT),
    WeightFile("musetalkV15/unet.pth", "unet-1.5", HF_MUSETALK, "musetalkV15/unet.pth"),
    WeightFile("musetalk/musetalk.json", "unet-1.0", HF_MUSETALK, "musetalk/musetalk.json", UNET_EXPECT),
    WeightFile("musetalk/pytorch_model.bin", "unet-1.0", HF_MUSETALK, "musetalk/pytorch_model.bin"),
    WeightFile(
        "sd-vae/config.json", "vae", HF_SD_VAE, "config.json",
        {"in_channels": 3, "out_channels": 3, "latent_channels": 4},
    ),
    WeightFile(
        "sd-vae/diffusion_pytorch_model.bin", "vae", HF_SD_VAE, "diffusion_pytorch_model.bin",
        alternatives=("sd-vae/diffusion_pytorch_model.safetensors",),
    ),
    WeightFile(
        "whisper/config.json", "whisper", HF_WHISPER_TINY, "config.json",
        {"d_model": 384, "num_mel_bins": 80, "max_source_positions": 1500},
    ),
    WeightFile(
        "whisper/pytorch_model.bin", "whisper", HF_WHISPER_TINY, "pytorch_model.bin",
        alternatives=("whisper/model.safetensors",),
    ),
    WeightFile(
        "whisper/preprocessor_config.json", "whisper", HF_WHISPER_TINY, "preprocessor_config.json",
        {"sampling_rate": 16000, "feature_size": 80, "hop_length": 160},
    ),
    # For preparing avatars: face parsing (the blending masks) and DWPose (landmarks), both
    # optional; MuseTalk's own script fetches the parsing weights from the same place (its
    # Windows variant) and DWPose as .pth, of which this is the ONNX export.
    WeightFile("face-parse-bisent/79999_iter.pth", "face-parse", HF_FACE_PARSING, "79999_iter.pth"),
    WeightFile("dwpose/dw-ll_ucoco_384.onnx", "dwpose", HF_DWPOSE, "dw-ll_ucoco_384.onnx"),
)
PREPARATION_COMPONENTS = ("face-parse", "dwpose")


@dataclass(frozen=True)
class WeightProblem:
    """A file that is missing or unusable, and what is wrong with it."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class WeightsError(RuntimeError):
    """MuseTalk's weights are incomplete or malformed; the message names every file."""

    def __init__(self, version: str, models_dir: Path, problems: Sequence[WeightProblem]) -> None:
        self.version = version
        self.models_dir = models_dir
        self.problems = list(problems)
        lines = [f"MuseTalk {version} weights in {models_dir} are not usable:"]
        lines += [f"  - {problem}" for problem in self.problems]
        lines.append(DOWNLOAD_HINT)
        super().__init__("\n".join(lines))

    def summary(self) -> str:
        """One line for logs: which files, without the hint."""
        return "; ".join(str(problem) for problem in self.problems)


@dataclass(frozen=True)
class MuseTalkWeights:
    """The files one MuseTalk version loads from a models folder."""

    models_dir: Path
    version: str

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise ValueError(f"MuseTalk version must be one of {', '.join(VERSIONS)}")

    @property
    def files(self) -> tuple[WeightFile, ...]:
        components = (f"unet-{self.version}", "vae", "whisper")
        return tuple(f for f in MANIFEST if f.component in components)

    def path(self, file: WeightFile) -> Path:
        """Where `file` is: its own name, or the first alternative that exists."""
        for candidate in (file.path, *file.alternatives):
            if (self.models_dir / candidate).is_file():
                return self.models_dir / candidate
        return self.models_dir / file.path

    def checkpoint(self, component: str) -> Path:
        """The tensor file (the one that is not JSON) of `component`."""
        return self.path(next(f for f in self.files if f.component == component and f.kind != "json"))

    @property
    def unet_config(self) -> Path:
        return self.path(next(f for f in self.files if f.component == f"unet-{self.version}" and f.kind == "json"))

    @property
    def unet_weights(self) -> Path:
        return self.checkpoint(f"unet-{self.version}")

    @property
    def vae_dir(self) -> Path:
        return self.models_dir / "sd-vae"

    @property
    def whisper_dir(self) -> Path:
        return self.models_dir / "whisper"

    def problems(self, component: str | None = None) -> list[WeightProblem]:
        """Every missing or malformed file (of `component`), found without loading any model."""
        problems = []
        for file in self.files:
            if component is not None and file.component != component:
                continue
            path = self.path(file)
            problem = check_file(path, file)
            if problem is not None:
                problems.append(WeightProblem(path, problem))
        return problems

    def require(self) -> None:
        """Raise `WeightsError` naming every problem the cheap checks find."""
        problems = self.problems()
        if problems:
            raise WeightsError(self.version, self.models_dir, problems)

    def fingerprint(self, component: str) -> str:
        """Names, sizes and modification times of a component's files: changes when they do."""
        parts = []
        for file in self.files:
            if file.component == component:
                stat = self.path(file).stat()
                parts.append(f"{self.path(file).name}:{stat.st_size}:{stat.st_mtime_ns}")
        return ";".join(parts)

    def error(self, path: Path, problem: str) -> WeightsError:
        """A `WeightsError` for one file found malformed while loading it."""
        return WeightsError(self.version, self.models_dir, [WeightProblem(path, problem)])


def locate_weights(models_dir: Path, version: str = "auto") -> MuseTalkWeights:
    """The weights to run: `version`, or with `auto` the newest complete one (1.5 if none is)."""
    if version != "auto":
        return MuseTalkWeights(models_dir, version)
    for candidate in VERSIONS:
        weights = MuseTalkWeights(models_dir, candidate)
        if not weights.problems():
            return weights
    return MuseTalkWeights(models_dir, VERSIONS[0])


def check_file(path: Path, file: WeightFile) -> str | None:
    """What is wrong with `path` (expected to hold `file`), or None."""
    if not path.exists():
        alternatives = "".join(f" (or {Path(a).name})" for a in file.alternatives)
        return f"missing{alternatives}; from huggingface.co/{file.repo} ({file.repo_path})"
    if not path.is_file():
        return "not a file"
    size = path.stat().st_size
    if size == 0:
        return "empty"
    if path.suffix == ".json":
        return _check_json(path, file.expect)
    if path.suffix == ".safetensors":
        return _check_safetensors(path, size)
    return _check_checkpoint(path)


def _check_json(path: Path, expect: Mapping[str, Any]) -> str | None:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"not valid JSON ({error})"
    if not isinstance(content, dict):
        return "not a JSON object"
    wrong = [
        f"{key}={content.get(key)!r} (MuseTalk needs {value!r})"
        for key, value in expect.items()
        if content.get(key) != value
    ]
    if wrong:
        return "not MuseTalk's configuration: " + ", ".join(wrong)
    return None


def _check_checkpoint(path: Path) -> str | None:
    with path.open("rb") as stream:
        head = stream.read(len(ZIP_MAGIC))
    if head.startswith(ZIP_MAGIC):
        # The zip directory sits at the very end, so a truncated download fails here.
        if not zipfile.is_zipfile(path):
            return "a damaged PyTorch checkpoint (truncated download?)"
        return None
    if head.startswith(PICKLE_MAGIC):
        return None
    return "not a PyTorch checkpoint (saved by torch.save)"


def _check_safetensors(path: Path, size: int) -> str | None:
    with path.open("rb") as stream:
        raw = stream.read(SAFETENSORS_HEADER_BYTES)
        if len(raw) < SAFETENSORS_HEADER_BYTES:
            return "not a safetensors file (too short)"
        (header_size,) = struct.unpack("<Q", raw)
        if header_size > min(size, SAFETENSORS_MAX_HEADER):
            return "not a safetensors file (bad header)"
        try:
            header = json.loads(stream.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "not a safetensors file (bad header)"
    ends = [
        entry["data_offsets"][1]
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry
    ]
    if SAFETENSORS_HEADER_BYTES + header_size + max(ends, default=0) != size:
        return "a damaged safetensors file (truncated download?)"
    return None


def manifest() -> dict[str, Any]:
    """The layout as `models/manifest.json` records it (the download script reads it)."""
    return {
        "description": "MuseTalk weights in MuseTalk's own models/ layout; see models/README.md.",
        "versions": {version: f"unet-{version}" for version in VERSIONS},
        "preparation": list(PREPARATION_COMPONENTS),
        "files": [
            {
                "path": f.path,
                "component": f.component,
                "repo": f.repo,
                "repo_path": f.repo_path,
                **({"alternatives": list(f.alternatives)} if f.alternatives else {}),
            }
            for f in MANIFEST
        ],
    }


def check_loads(models_dir: Path, versions: Sequence[str] = ()) -> bool:
    """Load every network of `versions` on the CPU and print what is wrong; True if all load.

    Without versions: those whose UNet is (at least partly) there, else 1.5.
    """
    from server.lipsync.musetalk.model import load_model

    present = [
        v for v in VERSIONS
        if any((models_dir / f.path).exists() for f in MANIFEST if f.component == f"unet-{v}")
    ]
    ok = True
    for version in versions or present or [VERSIONS[0]]:
        try:
            load_model(MuseTalkWeights(models_dir, version), "cpu")
        except WeightsError as error:
            print(error, file=sys.stderr)
            ok = False
        else:
            print(f"MuseTalk {version}: every file in {models_dir} loads.")
    return ok


def _main(argv: list[str]) -> int:
    if argv[:1] == ["manifest"]:
        print(json.dumps(manifest(), indent=2))
        return 0
    if argv[:1] == ["check"]:
        models_dir = Path(argv[1]) if len(argv) > 1 else Path("models")
        return 0 if check_loads(models_dir, argv[2:]) else 1
    print(
        "usage: python -m server.lipsync.musetalk.weights manifest | check [MODELS_DIR [VERSION ...]]",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
