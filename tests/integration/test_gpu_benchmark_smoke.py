"""scripts/bench_gpu.py --smoke: the GPU benchmark's code paths on the CPU, within its budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUDGET_SECONDS = 5
"""Less than the run takes: every phase still measures its first point (a smoke run's rule)."""
TIMEOUT_SECONDS = 300  # some 15 s on an idle 2-core box; far more when it is shared


def test_the_smoke_run_measures_each_phase_once_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    finished = subprocess.run(
        [
            sys.executable, "scripts/bench_gpu.py", "--smoke", "--phases", "networks", "engine",
            "--dtypes", "fp32", "--batch-sizes", "1", "--budget-seconds", str(BUDGET_SECONDS),
            "--out", str(out),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_SECONDS,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    results = json.loads(out.read_text())
    assert results["smoke"] is True and results["shapes"] == "tiny"
    networks = results["networks"]["fp32"]
    assert networks["gflop_per_frame"]["unet"] > 0 and networks["gflop_per_frame"]["vae"] > 0
    first = networks["rows"][0]
    assert (first["variant"], first["batch"]) == ("eager", 1)
    assert all(first[f"{name}_fps"] > 0 for name in ("unet", "vae", "networks"))
    assert results["engine"]["rows"][0]["fps"] > 0
    assert {"what": "networks/cuda_graph", "why": "needs CUDA"} in results["skipped"]
    # channels_last is measured, or skipped (and listed) once the phase is over its share
    # of the budget: which one depends on how busy the machine is, never neither.
    measured = {row["variant"] for row in networks["rows"]}
    skipped = any(s["what"].startswith("networks/fp32/channels_last") for s in results["skipped"])
    assert "channels_last" in measured or skipped
    assert "Networks, frames/s, fp32" in finished.stdout and "Whole engine" in finished.stdout
