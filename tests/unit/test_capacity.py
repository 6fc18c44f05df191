"""The capacity model: what a session costs idle and speaking, and what fits a budget."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from server.capacity import (
    DEFAULT_SHAPE,
    CapacityModel,
    FrameCosts,
    Load,
    StreamShape,
    available_cores,
)
from server.sessions.admission import AdmissionControl, CapacityError
from server.settings import Settings, SettingsError

# The figures for this kind of box: render 2 ms, convert + VP8 6 ms, Opus 2 %.
COSTS = FrameCosts(render_seconds=0.002, encode_seconds=0.006, audio_core_share=0.02)
AUDIO = 0.02 / 0.006  # the Opus stream, in encoded frames/s of the same CPU


def model(**overrides: object) -> CapacityModel:
    values: dict[str, object] = {"cores": 2, "headroom": 0.9, "idle_encode_share": 1.0}
    values.update(overrides)
    costs = values.pop("costs", COSTS)
    return CapacityModel(costs, **values)  # type: ignore[arg-type]


def test_the_budget_follows_from_the_costs_the_cores_and_the_headroom() -> None:
    budget = model().budget
    assert budget.render_fps == pytest.approx(0.9 / 0.002)
    assert budget.encode_fps == pytest.approx(0.9 * 2 / 0.006)


def test_configured_budgets_replace_the_ones_from_the_costs() -> None:
    budget = model(render_fps=100.0, encode_fps=50.0).budget
    assert (budget.render_fps, budget.encode_fps) == (100.0, 50.0)


def test_an_idle_session_costs_its_encoding_and_audio_and_no_render() -> None:
    load = model().session_load(StreamShape(fps=10, playback_fps=15), speaking=False)
    assert load.render_fps == 0
    assert load.encode_fps == pytest.approx(15 + AUDIO)


def test_a_shared_idle_loop_makes_an_idle_session_cheaper() -> None:
    load = model(idle_encode_share=0.1).session_load(StreamShape(10, 15), speaking=False)
    assert load.encode_fps == pytest.approx(1.5 + AUDIO)


def test_a_speaking_session_adds_its_render_frames_and_their_cpu_time() -> None:
    load = model().session_load(StreamShape(fps=10, playback_fps=15), speaking=True)
    assert load.render_fps == 10
    assert load.encode_fps == pytest.approx(15 + AUDIO + 10 * 0.002 / 0.006)


def test_a_gpu_render_takes_no_cpu_from_the_encoders() -> None:
    costs = FrameCosts(0.002, 0.006, 0.02, render_uses_cpu=False)
    load = model(costs=costs).session_load(StreamShape(10, 15), speaking=True)
    assert load.encode_fps == pytest.approx(15 + AUDIO)


def test_encoding_scales_with_the_avatars_pixels() -> None:
    small = model().session_load(StreamShape(10, 20, width=256, height=256), speaking=False)
    assert small.encode_fps == pytest.approx(20 / 4 + AUDIO)


def test_a_load_fits_up_to_the_budget_and_not_beyond() -> None:
    m = model(render_fps=100.0, encode_fps=50.0)
    assert m.fits(Load(100.0, 50.0))
    assert not m.fits(Load(100.5, 10.0))
    assert not m.fits(Load(10.0, 50.5))


# What calibration measured on the 2-core development box (CPU time, the box shared).
THIS_BOX = FrameCosts(render_seconds=0.0015, encode_seconds=0.0042, audio_core_share=0.012)
DEFAULT_HEADROOM = Settings().capacity_headroom


def test_the_defaults_admit_twelve_sessions_at_fps_10_on_two_cores() -> None:
    box = model(costs=THIS_BOX, headroom=DEFAULT_HEADROOM)
    assert box.speaking_sessions(DEFAULT_SHAPE) >= 12


def test_the_defaults_admit_eight_sessions_at_fps_25_on_two_cores() -> None:
    box = model(costs=THIS_BOX, headroom=DEFAULT_HEADROOM)
    assert box.speaking_sessions(StreamShape(25, 25)) >= 8


def test_the_render_worker_can_be_the_limit() -> None:
    assert model(render_fps=35.0).speaking_sessions(StreamShape(10, 15)) == 3


def test_at_least_one_session_is_always_allowed() -> None:
    assert model(encode_fps=1.0).speaking_sessions(DEFAULT_SHAPE) == 1


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CAPACITY_HEADROOM", "0", "CAPACITY_HEADROOM must be above 0"),
        ("CAPACITY_HEADROOM", "1.5", "CAPACITY_HEADROOM must be above 0"),
        ("CAPACITY_ENCODE_MS_PER_FRAME", "0", "CAPACITY_ENCODE_MS_PER_FRAME must be positive"),
        ("CAPACITY_CORES", "-1", "CAPACITY_CORES must not be negative"),
        ("CAPACITY_SPEAKING_SHARE", "1.5", "CAPACITY_SPEAKING_SHARE must be between 0 and 1"),
        ("CAPACITY_IDLE_ENCODE_SHARE", "-0.1", "CAPACITY_IDLE_ENCODE_SHARE must not be negative"),
        ("THREAD_SWITCH_INTERVAL_SECONDS", "0", "THREAD_SWITCH_INTERVAL_SECONDS must be above 0"),
        ("THREAD_SWITCH_INTERVAL_SECONDS", "1", "THREAD_SWITCH_INTERVAL_SECONDS must be above 0 and at most 0.1"),
    ],
)
def test_bad_capacity_settings_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({name: value})


def test_a_cgroup_cpu_quota_narrows_the_cores(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("50000 100000\n")
    assert available_cores(cpu_max) == 0.5


def test_without_a_quota_the_cores_are_the_affinitys(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert available_cores(cpu_max) == len(os.sched_getaffinity(0))
    assert available_cores(tmp_path / "missing") == len(os.sched_getaffinity(0))


def admission(speaking_share: float) -> AdmissionControl:
    return AdmissionControl(model(encode_fps=100.0), lambda: [], 10.0, 30.0, speaking_share)


def creations_admitted(control: AdmissionControl, shape: StreamShape) -> int:
    """Creations of `shape` under way together that are admitted (each holds its ticket)."""
    admitted = 0
    with contextlib.suppress(CapacityError):
        while admitted < 100:
            control.reserve_session(shape)
            admitted += 1
    return admitted


def test_by_default_a_session_is_admitted_only_if_all_could_speak_at_once() -> None:
    # 100 / 21.7 (speaking at fps 10, playback 15): four.
    assert creations_admitted(admission(1.0), DEFAULT_SHAPE) == 4


def test_a_speaking_share_below_one_overbooks_idle_sessions() -> None:
    # 100 / 18.3 (idle): five.
    assert creations_admitted(admission(0.0), DEFAULT_SHAPE) == 5


def test_a_released_reservation_frees_its_room() -> None:
    control = admission(1.0)
    tickets = [control.reserve_session(DEFAULT_SHAPE) for _ in range(4)]
    with pytest.raises(CapacityError):
        control.reserve_session(DEFAULT_SHAPE)
    control.release_session(tickets[0])
    control.reserve_session(DEFAULT_SHAPE)


def test_a_refused_creation_is_counted_by_its_reason() -> None:
    control = admission(1.0)
    creations_admitted(control, DEFAULT_SHAPE)
    assert control.describe()["refusals"]["session_capacity"] == 1
