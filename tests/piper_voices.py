"""A tiny Piper voice made here: a real ONNX model with Piper's inputs and output.

It is no speech model: each phoneme id becomes one hop of a 200 Hz tone, so its audio is
as long as the phonemes piper-tts made of the text (hop samples each), which tells what
piper was given. Written as `<name>.onnx` + `<name>.onnx.json`, as an operator would.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

SAMPLE_RATE = 16_000
HOP = 256
OPSET = 17


def _model() -> onnx.ModelProto:
    tone = (0.5 * np.sin(2 * np.pi * 200 * np.arange(HOP) / SAMPLE_RATE)).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["input"], ["ids"], to=TensorProto.FLOAT),  # [1, N]
        helper.make_node("Unsqueeze", ["ids", "axis2"], ["ids3"]),  # [1, N, 1]
        helper.make_node("Mul", ["ids3", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "one"], ["ones"]),
        helper.make_node("Mul", ["ones", "tone"], ["hops"]),  # [1, N, HOP]
        helper.make_node("Reshape", ["hops", "shape"], ["output"]),  # [1, 1, N * HOP]
    ]
    initializers = [
        helper.make_tensor("axis2", TensorProto.INT64, [1], [2]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
        helper.make_tensor("tone", TensorProto.FLOAT, [1, 1, HOP], tone.tolist()),
        helper.make_tensor("shape", TensorProto.INT64, [3], [1, 1, -1]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-piper-voice",
        [
            helper.make_tensor_value_info("input", TensorProto.INT64, [1, "phonemes"]),
            helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, "samples"])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_tiny_voice(folder: Path, name: str = "tiny", espeak_voice: str = "en-us") -> Path:
    """`folder/<name>.onnx` and its `.onnx.json`; returns the model's path."""
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / f"{name}.onnx"
    onnx.save(_model(), model_path)
    config = {
        "audio": {"sample_rate": SAMPLE_RATE},
        "espeak": {"voice": espeak_voice},
        "phoneme_type": "espeak",
        "num_symbols": 256,
        "num_speakers": 1,
        "phoneme_id_map": DEFAULT_PHONEME_ID_MAP,
        "inference": {"noise_scale": 0.667, "length_scale": 1, "noise_w": 0.8},
    }
    model_path.with_name(model_path.name + ".json").write_text(json.dumps(config))
    return model_path
