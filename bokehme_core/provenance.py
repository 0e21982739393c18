"""Where official weights come from: :class:`WeightsSource`, the record each network family declares beside its
class (as timm's pretrained configs do): ``PRETRAINED`` in :mod:`bokehme_core.neural.arnet`,
:mod:`bokehme_core.neural.iunet` and :mod:`bokehme_core.depth.depth_anything_v2`.
:data:`bokehme_core.weights.PROVENANCE` gathers them; this module imports nothing of the pack, so every family
can use it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WeightsSource", "hf_url"]


@dataclass(frozen=True)
class WeightsSource:
    """Where one official weights file comes from.

    Attributes:
        display: human-readable name.
        url: upstream download URL.
        filename: the file's official name (saved under it).
        licence: licence of the weights.
        network: "arnet", "iunet" or "depth" (which loader verifies it).
        sha256: hash of the upstream file, where known (otherwise the strict load is the check).
        homepage: the upstream project.
    """

    display: str
    url: str
    filename: str
    licence: str
    network: str
    sha256: str | None = None
    homepage: str = ""


def hf_url(repo: str, filename: str) -> str:
    """The download URL of ``filename`` in the Hugging Face repository ``repo`` (main branch)."""
    return f"https://huggingface.co/{repo}/resolve/main/{filename}"
