"""Download of the official BokehMe weights (https://github.com/JuewenPeng/BokehMe, ``checkpoints/``).

Downloads are atomic (a temporary file in the destination folder, then ``os.replace``), verified by sha256
where the hash is known and always by a strict load of the network, so a half-written or wrong file never
ends up under the final name. Nothing here runs at import time or without an explicit call.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Callable

from .._download import download_verified

logger = logging.getLogger(__name__)

__all__ = ["OFFICIAL_URLS", "OFFICIAL_SHA256", "WeightsDownloadError", "download_official", "official_url"]

#: name -> upstream URL
OFFICIAL_URLS = {
    name: f"https://github.com/JuewenPeng/BokehMe/raw/main/checkpoints/{name}.pth" for name in ("arnet", "iunet")
}

#: name -> sha256 of the upstream file, where known (arnet.pth was not available to us: the strict load is
#: its check and its hash is logged)
OFFICIAL_SHA256 = {
    "iunet": "6df927797a1657ba700410d43a9434f98268fe5888553d30ebb9f1fd7130a02d",
}


class WeightsDownloadError(RuntimeError):
    """The download failed or produced a file that is not the expected network."""


def official_url(name: str) -> str:
    """The upstream URL of ``name`` ("arnet" or "iunet")."""
    if name not in OFFICIAL_URLS:
        raise ValueError(f"name must be one of {sorted(OFFICIAL_URLS)}, got {name!r}")
    return OFFICIAL_URLS[name]


def download_official(
    name: str,
    dest_dir,
    url: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    timeout: float = 60.0,
) -> pathlib.Path:
    """Download the official ``{name}.pth`` into ``dest_dir`` (created if needed) and return its path.

    Args:
        name: "arnet" or "iunet".
        dest_dir: destination folder; the file is saved as ``dest_dir / f"{name}.pth"``.
        url: source URL (default: :data:`OFFICIAL_URLS`); ``file://`` URLs work too.
        progress: ``progress(bytes_done, bytes_total)``; ``bytes_total`` is 0 when the server does not say.
        timeout: network timeout in seconds.

    Returns:
        the path of the verified file.

    Raises:
        WeightsDownloadError: offline / HTTP error (the message gives the URL and where to put the file by
            hand), sha256 mismatch, or a file that does not load strictly as the network.
    """
    from .checkpoints import CheckpointError, load_arnet, load_iunet

    source = url or official_url(name)
    if name not in OFFICIAL_URLS:
        raise ValueError(f"name must be one of {sorted(OFFICIAL_URLS)}, got {name!r}")
    dest_dir = pathlib.Path(os.fspath(dest_dir)).expanduser()
    target = dest_dir / f"{name}.pth"
    by_hand = (
        f"Download it by hand from {OFFICIAL_URLS[name]} (the checkpoints/ folder of "
        f"https://github.com/JuewenPeng/BokehMe) and save it as {target}"
    )

    def verify(path: pathlib.Path, sha: str) -> None:
        expected = OFFICIAL_SHA256.get(name)
        if expected is not None and sha != expected:
            raise WeightsDownloadError(
                f"{source} has sha256 {sha}, expected {expected} (wrong or corrupted file). {by_hand}"
            )
        try:
            (load_arnet if name == "arnet" else load_iunet)(path)
        except (CheckpointError, FileNotFoundError) as exc:
            raise WeightsDownloadError(f"{source} is not a usable {name} checkpoint: {exc}. {by_hand}") from exc

    sha = download_verified(source, target, verify=verify, by_hand=by_hand, error=WeightsDownloadError,
                            progress=progress, timeout=timeout)
    logger.info("downloaded %s -> %s (sha256 %s)", source, target, sha)
    return target
