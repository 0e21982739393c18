"""Safe loading of ARNet / IUNet weights.

Accepted files:

* the official training checkpoints as shipped (``checkpoints/arnet.pth``, ``checkpoints/iunet.pth`` of
  https://github.com/JuewenPeng/BokehMe): a dict whose ``model`` entry is the state dict, next to optimizer
  state and a few numpy objects. They are read with ``torch.load(weights_only=True)`` and an allow-list of
  exactly the numpy globals those files use; never with unrestricted pickle;
* a plain state dict saved with ``torch.save`` (``.pth`` / ``.pt``);
* ``.safetensors``.

The architecture size (width, number of blocks) is inferred from the tensor shapes, then the state dict is
loaded strictly: missing, unexpected or mis-shaped keys raise :class:`CheckpointError` naming them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import zipfile
from typing import Type

import torch

from .arnet import ARNet
from .blocks import ShuffleConvNet
from .iunet import IUNet

logger = logging.getLogger(__name__)

__all__ = ["CheckpointError", "load_state_dict_file", "load_arnet", "load_iunet", "load_network", "save_safetensors"]

#: how many mismatching keys an error message lists
_SHOW_KEYS = 5


class CheckpointError(ValueError):
    """A weights file that cannot be used: unreadable, truncated, not a state dict, or the wrong network."""


def _numpy_safe_globals() -> list:
    """The numpy globals the official ``iunet.pth`` pickles (an int32 array of eval steps), and nothing more.

    The pickle names them ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype`` and
    ``numpy.dtypes.Int32DType``; with numpy >= 2 the function lives in ``numpy._core``, so it is registered
    under the name the pickle uses.
    """
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    allowed = [(_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype]
    int32_dtype = getattr(getattr(np, "dtypes", None), "Int32DType", None)  # numpy >= 1.25
    if int32_dtype is not None:
        allowed.append(int32_dtype)
    return allowed


def _read_torch_file(path: pathlib.Path) -> object:
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"cannot read {path}: not a torch.save zip archive (the file is truncated or corrupted, or in another "
            f"format); download it again, or convert it to .safetensors"
        )
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:  # torch < 2.5: no allow-list context; plain weights-only load (fine for state dicts)
        allow = contextlib.nullcontext()
    else:
        allow = safe_globals(_numpy_safe_globals())
    try:
        with allow:
            return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot read {path}: {first_line}. The file is truncated or corrupted, or holds objects other "
            f"than tensors (only weights are loaded, never arbitrary pickled code); download it again"
        ) from exc
    except Exception as exc:  # the weights-only unpickler raises pickle.UnpicklingError
        if type(exc).__name__ != "UnpicklingError":
            raise
        raise CheckpointError(
            f"cannot read {path}: it holds objects that are not allowed in a weights file ({exc}); only the "
            f"official BokehMe checkpoints, plain state dicts and .safetensors are accepted"
        ) from exc


def _read_safetensors(path: pathlib.Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"cannot read {path} as safetensors: {exc}. The file is truncated or corrupted; download it again"
        ) from exc


def load_state_dict_file(path) -> dict:
    """Read a state dict (name -> tensor) from an official checkpoint, a plain ``torch.save`` state dict or a
    ``.safetensors`` file, without executing pickled code.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: unreadable, truncated or not holding a state dict.
    """
    path = pathlib.Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix.lower() == ".safetensors":
        state = _read_safetensors(path)
    else:  # .pth / .pt / anything else: torch.save zip archive (checked inside)
        state = _read_torch_file(path)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # official training checkpoint: {"model": state_dict, "optimizer": ..., ...}
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path} does not hold a state dict (got {type(state).__name__})")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path} is not a state dict of tensors: entries {bad[:_SHOW_KEYS]} are not tensors")
    return dict(state)


def _strict_load(model: ShuffleConvNet, state: dict, source: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:_SHOW_KEYS]}" + (" ..." if len(missing) > _SHOW_KEYS else ""))
    if unexpected:
        problems.append(
            f"unexpected keys {unexpected[:_SHOW_KEYS]}" + (" ..." if len(unexpected) > _SHOW_KEYS else "")
        )
    if wrong_shape:
        problems.append(f"wrong shapes {wrong_shape[:_SHOW_KEYS]}")
    if problems:
        raise CheckpointError(
            f"{source} does not match {model.display_name}({model.extra_repr()}): " + "; ".join(problems)
        )
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if nonfinite:
        raise CheckpointError(f"{source} holds NaN/inf weights in {nonfinite[:_SHOW_KEYS]}")
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)


def load_network(cls: Type[ShuffleConvNet], state_or_path, device="cpu") -> ShuffleConvNet:
    """Build ``cls`` (ARNet or IUNet) with the size inferred from the weights and load them strictly.

    Args:
        cls: :class:`ARNet` or :class:`IUNet`.
        state_or_path: a state dict or a path accepted by :func:`load_state_dict_file`.
        device: where to put the network.

    Returns:
        the network in eval mode, float32, on ``device``.
    """
    if isinstance(state_or_path, dict):
        state, source = state_or_path, "state dict"
    else:
        state, source = load_state_dict_file(state_or_path), str(state_or_path)
    try:
        config = cls.config_from_state_dict(state)
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    model = cls(config.middle_channels, config.num_blocks)
    _strict_load(model, state, source)
    logger.debug("loaded %s(%s) from %s", cls.display_name, model.extra_repr(), source)
    return model.eval().to(device)


def load_arnet(path, device="cpu") -> ARNet:
    """Load ARNet weights (official ``arnet.pth``, a plain state dict, or ``.safetensors``); the width and
    number of blocks are inferred from the tensor shapes. Raises :class:`CheckpointError` with the first
    mismatching keys if the file is not an ARNet (e.g. an IUNet or a depth model)."""
    return load_network(ARNet, path, device)


def load_iunet(path, device="cpu") -> IUNet:
    """Load IUNet weights (official ``iunet.pth``, a plain state dict, or ``.safetensors``); see
    :func:`load_arnet`."""
    return load_network(IUNet, path, device)


def save_safetensors(model: ShuffleConvNet, path, metadata: dict | None = None) -> None:
    """Save a network's weights as ``.safetensors`` (contiguous float32 CPU tensors), with string
    ``metadata`` (the architecture size is added as ``middle_channels`` / ``num_blocks``)."""
    from safetensors.torch import save_file

    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta.update(
        network=model.display_name,
        middle_channels=str(model.config.middle_channels),
        num_blocks=str(model.config.num_blocks),
    )
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=meta)
