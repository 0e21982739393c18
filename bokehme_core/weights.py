"""Every network's weights in one place: safe reading, strict loading, provenance, downloads, bundled weights.

* :func:`read_state_dict` is the one reader for ARNet, IUNet and the depth models: ``.safetensors``, or a
  ``torch.save`` archive read with ``torch.load(weights_only=True)`` and an allow-list of exactly the numpy
  globals the official ``iunet.pth`` pickles (never unrestricted pickle); ``{"model": ...}`` /
  ``{"state_dict": ...}`` wrappers (the official training checkpoints) are unwrapped.
* :func:`check_state_dict` is the one strict check (missing, unexpected, mis-shaped, non-float and NaN/inf
  tensors, named in the message); :func:`load_arnet` / :func:`load_iunet` infer the size from the shapes and
  load strictly; the depth models (:mod:`bokehme_core.depth.loading`) use the same reader and check.
* Every failure to use a weights file raises :class:`CheckpointError` (a ValueError) or a subclass of it
  (:class:`bokehme_core.depth.DepthCheckpointError`); every failed download raises
  :class:`WeightsDownloadError` (a RuntimeError) saying where to put the file by hand.
* :data:`PROVENANCE` gathers where official weights come from (URL, file name, sha256 where known, licence),
  declared beside each network class (``PRETRAINED``); :func:`download_weights` fetches any of them atomically
  and verifies it (sha256, then a strict load by the loader the caller passes; ARNet / IUNet by default).
* :func:`load_bundled_models` loads our own trained weights from ``weights/`` (sha256 checked against its
  ``manifest.json``), cached as CPU state dicts: every call returns new modules, so callers may move them
  between devices without touching anyone else's copy.

Nothing here runs at import time; torch-heavy imports happen inside the functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pathlib
import pickle
import zipfile
from typing import Callable, Iterable

import torch

from ._download import download_verified
from .depth.depth_anything_v2 import PRETRAINED as DEPTH_ANYTHING_V2_WEIGHTS
from .neural.arnet import PRETRAINED as ARNET_WEIGHTS
from .neural.iunet import PRETRAINED as IUNET_WEIGHTS
from .provenance import WeightsSource

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "WeightsDownloadError",
    "WeightsSource",
    "PROVENANCE",
    "official_url",
    "read_state_dict",
    "check_state_dict",
    "load_network",
    "load_arnet",
    "load_iunet",
    "save_safetensors",
    "download_weights",
    "load_bundled_models",
    "verify_manifest",
]

#: how many offending keys an error message lists
SHOW_KEYS = 5


class CheckpointError(ValueError):
    """A weights file that cannot be used: unreadable, truncated, not a state dict, or the wrong network.
    The base class of every weights error of the pack (the depth models raise a subclass)."""


class WeightsDownloadError(RuntimeError):
    """A download failed or produced a file that is not the expected network (the message says how to get
    the file by hand)."""


# --- provenance -------------------------------------------------------------------------------------------

#: name -> :class:`~bokehme_core.provenance.WeightsSource` of every official file the pack can download, gathered
#: from the declarations beside each network class (``PRETRAINED`` of ARNet, IUNet and Depth Anything V2).
PROVENANCE = {**ARNET_WEIGHTS, **IUNET_WEIGHTS, **DEPTH_ANYTHING_V2_WEIGHTS}


def _source(name: str, networks: Iterable[str] | None = None) -> WeightsSource:
    choices = sorted(k for k, v in PROVENANCE.items() if networks is None or v.network in networks)
    if name not in choices:
        raise ValueError(f"name must be one of {choices}, got {name!r}")
    return PROVENANCE[name]


def official_url(name: str) -> str:
    """The upstream URL of a :data:`PROVENANCE` entry ("arnet", "iunet", "depth_anything_v2_vits", ...)."""
    return _source(name).url


# --- reading ----------------------------------------------------------------------------------------------

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


def _read_torch_file(path: pathlib.Path, error: type) -> object:
    if not zipfile.is_zipfile(path):
        raise error(
            f"cannot read {path.name}: not a torch.save zip archive (the file is truncated or corrupted, or in "
            f"another format); download it again, or convert it to .safetensors"
        )
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    # torch < 2.5 has no allow-list context: a plain weights-only load (fine for state dicts)
    allow = contextlib.nullcontext() if safe_globals is None else safe_globals(_numpy_safe_globals())
    try:
        with allow:
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # the weights-only unpickler refused an object
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = next((line for line in lines if "Unsupported global" in line), lines[0] if lines else "refused")
        raise error(
            f"cannot read {path.name}: it holds objects that are not allowed in a weights file ({reason}); only "
            f"weights are loaded, never pickled code"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(
            f"cannot read {path.name}: {first_line}. The file is truncated or corrupted; download it again"
        ) from exc


def _read_safetensors(path: pathlib.Path, error: type) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise error(
            f"cannot read {path.name} as safetensors: {exc}. The file is truncated or corrupted; download it again"
        ) from exc


def read_state_dict(path, *, what: str = "weights", error: type = CheckpointError) -> dict:
    """Read a flat ``{name: tensor}`` state dict (CPU) from a weights file, without executing pickled code.

    Args:
        path: ``.safetensors``, or a ``torch.save`` archive (``.pth`` / ``.pt`` / any other suffix) holding a
            state dict or a dict with the state dict under ``"model"`` or ``"state_dict"``.
        what: what the file should be, for the not-found message ("weights", "depth model", ...).
        error: the :class:`CheckpointError` subclass to raise.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError (``error``): unreadable, truncated, disallowed objects, or not a state dict of tensors.
    """
    path = pathlib.Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if path.suffix.lower() == ".safetensors":
        state = _read_safetensors(path, error)
    else:
        state = _read_torch_file(path, error)
    if isinstance(state, dict):
        for wrapper in ("model", "state_dict"):  # official training checkpoints: {"model": sd, "optimizer": ...}
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not state:
        found = f" with keys {sorted(map(str, state))[:6]}" if isinstance(state, dict) else ""
        raise error(f"{path.name} does not hold a state dict (got {type(state).__name__}{found})")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise error(f"{path.name} is not a state dict of tensors: entries {bad[:SHOW_KEYS]} are not tensors")
    return dict(state)


def _listed(label: str, items: list) -> str:
    more = f" ... ({len(items)} in all)" if len(items) > SHOW_KEYS else ""
    return f"{label} {items[:SHOW_KEYS]}{more}"


def check_state_dict(
    expected: dict,
    state: dict,
    source: str,
    *,
    display_key: Callable[[str], str] = str,
    error: type = CheckpointError,
) -> None:
    """Strict check of ``state`` against a module's ``expected`` state dict (tensors or shapes).

    Raises ``error`` naming (through ``display_key``, e.g. the official key names) the missing, unexpected
    and mis-shaped keys, then non-float and NaN/inf tensors.
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{display_key(k)} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(_listed("missing keys", [display_key(k) for k in missing]))
    if unexpected:
        problems.append(_listed("unexpected keys", [display_key(k) for k in unexpected]))
    if wrong_shape:
        problems.append(_listed("wrong shapes", wrong_shape))
    if problems:
        raise error(f"{source}: " + "; ".join(problems))
    not_float = [display_key(k) for k, v in state.items() if not v.is_floating_point()]
    if not_float:
        raise error(f"{source} has non-float tensors {not_float[:SHOW_KEYS]}")
    nonfinite = [display_key(k) for k, v in state.items() if not torch.isfinite(v).all()]
    if nonfinite:
        raise error(f"{source} holds NaN/inf weights in {nonfinite[:SHOW_KEYS]}: corrupted file")


# --- ARNet / IUNet ----------------------------------------------------------------------------------------

def load_network(cls, state_or_path, device="cpu"):
    """Build ``cls`` (:class:`~bokehme_core.neural.ARNet` or :class:`~bokehme_core.neural.IUNet`) with the size
    inferred from the weights and load them strictly.

    Args:
        cls: ARNet or IUNet.
        state_or_path: a state dict or a path accepted by :func:`read_state_dict`.
        device: where to put the network.

    Returns:
        the network in eval mode, float32, on ``device``.
    """
    if isinstance(state_or_path, dict):
        state, source = state_or_path, "state dict"
    else:
        state, source = read_state_dict(state_or_path), pathlib.Path(os.fspath(state_or_path)).name
    try:
        config = cls.config_from_state_dict(state)
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    model = cls(config.middle_channels, config.num_blocks)
    check_state_dict(model.state_dict(), state, f"{source} does not match {model.display_name}({model.extra_repr()})")
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    logger.debug("loaded %s(%s) from %s", cls.display_name, model.extra_repr(), source)
    return model.eval().to(device)


def load_arnet(path, device="cpu"):
    """Load ARNet weights (official ``arnet.pth``, a plain state dict, or ``.safetensors``); the width and
    number of blocks are inferred from the tensor shapes. Raises :class:`CheckpointError` with the first
    mismatching keys if the file is not an ARNet (e.g. an IUNet or a depth model)."""
    from .neural.arnet import ARNet

    return load_network(ARNet, path, device)


def load_iunet(path, device="cpu"):
    """Load IUNet weights (official ``iunet.pth``, a plain state dict, or ``.safetensors``); see
    :func:`load_arnet`."""
    from .neural.iunet import IUNet

    return load_network(IUNet, path, device)


def save_safetensors(model, path, metadata: dict | None = None) -> None:
    """Save an ARNet / IUNet's weights as ``.safetensors`` (contiguous float32 CPU tensors), with string
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


# --- downloads --------------------------------------------------------------------------------------------

def _verify_bokehme(name: str) -> Callable[[pathlib.Path], None]:
    """The strict load of this module's own networks (ARNet, IUNet): the default ``verify_load``."""
    network = PROVENANCE[name].network
    return load_arnet if network == "arnet" else load_iunet


def download_weights(
    name: str,
    dest_dir,
    *,
    url: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    timeout: float = 60.0,
    networks: Iterable[str] | None = None,
    verify_load: Callable[[pathlib.Path], object] | None = None,
) -> pathlib.Path:
    """Download the official file ``PROVENANCE[name]`` into ``dest_dir`` (created if needed); return its path.

    The file is streamed to a temporary name, checked (sha256 where known, then a strict load as its network)
    and only then renamed, so a partial or wrong file never sits under the final name.

    Args:
        name: a key of :data:`PROVENANCE`.
        dest_dir: destination folder; the file keeps its official name.
        url: source (default: the official URL); ``file://`` and ``http://`` URLs work too.
        progress: ``progress(bytes_done, bytes_total)``; ``bytes_total`` is 0 when the server does not say.
        timeout: network timeout in seconds.
        networks: restrict ``name`` to these kinds ("arnet", "iunet", "depth"); None = any.
        verify_load: ``verify_load(path)`` loads the downloaded file strictly as its network and raises
            :class:`CheckpointError` (or returns a string saying why) when it is not usable; the caller passes it
            (:func:`bokehme_core.depth.download_depth_model` passes the depth loader). Default: :func:`load_arnet`
            / :func:`load_iunet` for ARNet / IUNet; other networks need one.

    Raises:
        ValueError: unknown ``name``, or no ``verify_load`` for a network of another module.
        WeightsDownloadError: offline / HTTP error / incomplete / sha256 mismatch / not the expected network;
            the message gives the URL and the path where to save the file by hand.
    """
    source = _source(name, networks)
    if verify_load is None:
        if source.network not in ("arnet", "iunet"):
            raise ValueError(f"download_weights({name!r}) needs verify_load=... for {source.network} weights (the "
                             f"strict loader of that network); bokehme_core.depth.download_depth_model passes it")
        verify_load = _verify_bokehme(name)
    address = url or source.url
    target = pathlib.Path(os.fspath(dest_dir)).expanduser() / source.filename
    by_hand = (
        f"Download it by hand from {source.url} (licence: {source.licence}) and save it as {target}"
    )

    def verify(path: pathlib.Path, sha: str) -> None:
        if source.sha256 is not None and sha != source.sha256:
            raise WeightsDownloadError(
                f"{address} has sha256 {sha}, expected {source.sha256} (wrong or corrupted file). {by_hand}"
            )
        try:
            result = verify_load(path)
            reason = result if isinstance(result, str) else None
        except (CheckpointError, FileNotFoundError) as exc:
            reason = str(exc)
        if reason is not None:
            raise WeightsDownloadError(f"the downloaded file is not a usable {source.display}: {reason}. {by_hand}")

    # the licence is shown wherever the download runs (CLI, node, library); a restricted one as a warning
    restricted = "non-commercial" in source.licence.lower()
    logger.log(logging.WARNING if restricted else logging.INFO, "downloading %s from %s; licence: %s",
               source.display, address, source.licence)
    sha = download_verified(address, target, verify=verify, by_hand=by_hand, error=WeightsDownloadError,
                            label=source.display, progress=progress, timeout=timeout)
    logger.info("saved %s to %s (sha256 %s)", source.display, target, sha)
    return target


# --- bundled weights --------------------------------------------------------------------------------------

#: (folder, file stamps) -> {"arnet": state dict, "iunet": state dict} (CPU tensors; one entry)
_BUNDLED_CACHE: dict = {}


def verify_manifest(folder) -> None:
    """Check the bundled files against ``manifest.json`` (``{"arnet": {"file", "sha256"}, "iunet": {...}}``)
    when it exists: a damaged install raises instead of rendering with broken weights."""
    folder = pathlib.Path(folder)
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        logger.warning("no manifest.json next to the bundled weights in %s: sha256 not checked", folder)
        return
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {manifest}: {exc}; reinstall the node pack") from exc
    for name in ("arnet", "iunet"):
        entry = entries.get(name) if isinstance(entries, dict) else None
        if not isinstance(entry, dict) or "sha256" not in entry:
            continue
        path = folder / entry.get("file", f"{name}.safetensors")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != entry["sha256"]:
            raise CheckpointError(
                f"bundled weights {path} are damaged: sha256 {digest}, manifest.json says {entry['sha256']}; "
                f"reinstall the node pack (or download the official weights: python -m bokehme_core download-weights)"
            )
    logger.info("bundled BokehMe weights: %s", entries.get("name", folder) if isinstance(entries, dict) else folder)


def load_bundled_models(device="cpu") -> tuple:
    """Our own trained ``(ARNet, IUNet)`` from ``bokehme_core.paths.bundled_weights_dir()``
    (``arnet.safetensors``, ``iunet.safetensors``; sha256 checked against ``manifest.json``).

    The files are read and checked once per modification time; every call returns new modules on ``device``
    (eval mode), so moving one to another device never affects another caller.

    Raises:
        FileNotFoundError: the files are missing; the message says how to get weights.
        CheckpointError: a file does not match the sha256 in ``manifest.json`` or is unreadable.
    """
    from .neural.arnet import ARNet
    from .neural.iunet import IUNet
    from .paths import bundled_weights_dir

    folder = pathlib.Path(bundled_weights_dir())
    paths = {"arnet": folder / "arnet.safetensors", "iunet": folder / "iunet.safetensors"}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"bundled BokehMe weights missing in {folder}: {', '.join(missing)}. Get the official weights with "
            f"`python -m bokehme_core download-weights`, then pass arnet=load_arnet(path) and "
            f"iunet=load_iunet(path) (or reinstall the node pack, which ships weights/)"
        )
    stamped = [*paths.values(), folder / "manifest.json"]
    key = (str(folder), tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in stamped))
    if key not in _BUNDLED_CACHE:
        verify_manifest(folder)
        _BUNDLED_CACHE.clear()
        _BUNDLED_CACHE[key] = {name: read_state_dict(path) for name, path in paths.items()}
    states = _BUNDLED_CACHE[key]
    return load_network(ARNet, states["arnet"], device), load_network(IUNet, states["iunet"], device)
