"""Where the pack looks for files outside ComfyUI (CLI, Python use)."""

from __future__ import annotations

import os
import pathlib

__all__ = ["package_root", "bundled_weights_dir", "user_cache_dir"]


def package_root() -> pathlib.Path:
    """The node pack's root folder (the parent of ``bokehme_core``)."""
    return pathlib.Path(__file__).resolve().parents[1]


def bundled_weights_dir() -> pathlib.Path:
    """``weights/`` of the pack: our own trained weights (safetensors + manifest.json)."""
    return package_root() / "weights"


def user_cache_dir() -> pathlib.Path:
    """Per-user folder for downloaded weights: ``$BOKEHME_CACHE`` if set, else ``$XDG_CACHE_HOME/bokehme``
    (``~/.cache/bokehme``; ``%LOCALAPPDATA%\\bokehme`` on Windows). Not created here."""
    env = os.environ.get("BOKEHME_CACHE")
    if env:
        return pathlib.Path(env).expanduser()
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return pathlib.Path(os.environ["LOCALAPPDATA"]) / "bokehme"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "bokehme"
