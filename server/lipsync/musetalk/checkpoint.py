"""Reading a state dict from a weight file into a module, strictly, with clear errors.

Every network is first built on the meta device (no memory, no random init) and then
given the file's tensors with `load_state_dict(assign=True)`. A key that is missing,
unexpected or of another shape is an error naming the file, never a silently random
layer (which is what `from_pretrained` does with a missing key: it warns and
initialises it).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file as load_safetensors

from server.lipsync.musetalk.weights import MuseTalkWeights

# How many offending keys an error message shows per kind.
KEYS_SHOWN = 3


def read_state_dict(weights: MuseTalkWeights, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a `.safetensors` file or of a plain state dict saved by torch.save."""
    try:
        if path.suffix == ".safetensors":
            state = load_safetensors(path, device="cpu")
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:
                if "mmap" not in str(error):
                    raise
                # Files from PyTorch < 1.6 (not zip archives) cannot be memory-mapped.
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors raise many kinds for a damaged file
        raise weights.error(path, f"cannot be read ({error})") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise weights.error(path, "not a plain state dict of tensors")
    return dict(state)


def load_into(
    module: torch.nn.Module,
    state: dict[str, torch.Tensor],
    weights: MuseTalkWeights,
    path: Path,
    what: str,
    device: torch.device,
    dtype: torch.dtype,
) -> None:
    """Give meta-device `module` the tensors of `state` (read from `path`) in `dtype` on `device`.

    All or nothing: `WeightsError` if any tensor is missing, unexpected or misshapen.
    """
    expected = module.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    reshaped = [
        f"{key} {tuple(state[key].shape)} instead of {tuple(tensor.shape)}"
        for key, tensor in expected.items()
        if key in state and state[key].shape != tensor.shape
    ]
    details = [
        f"{len(keys)} {label}: " + ", ".join(keys[:KEYS_SHOWN])
        + (f" and {len(keys) - KEYS_SHOWN} more" if len(keys) > KEYS_SHOWN else "")
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped))
        if keys
    ]
    if details:
        raise weights.error(path, f"does not hold {what} (tensors " + "; ".join(details) + ")")
    # Converted here rather than with module.to(): one copy at most, straight to the device.
    module.load_state_dict(
        {key: tensor.to(device=device, dtype=dtype) for key, tensor in state.items()},
        strict=True,
        assign=True,
    )
    module.eval().requires_grad_(False)
    left = [name for name, tensor in [*module.named_parameters(), *module.named_buffers()] if tensor.is_meta]
    if left:
        raise RuntimeError(f"{type(module).__name__} has tensors no checkpoint fills: {left[:KEYS_SHOWN]}")
