"""Atomic, verified downloads shared by the weight downloaders (BokehMe networks, depth models).

The file is streamed into a temporary file in the destination folder, hashed on the way, checked by the
caller's ``verify`` (strict load, sha256) and only then renamed to its final name, so an interrupted or bad
download never leaves a file that looks valid.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
import urllib.error
import urllib.request
from typing import Callable

__all__ = ["download_verified"]

_CHUNK = 1 << 20


def download_verified(
    source: str,
    target: pathlib.Path,
    *,
    verify: Callable[[pathlib.Path, str], None],
    by_hand: str,
    error: type[Exception],
    label: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    timeout: float = 60.0,
) -> str:
    """Download ``source`` (http(s):// or file://) to ``target`` atomically; return its sha256.

    Args:
        source: URL.
        target: final path; its folder is created if needed. The temporary file keeps the target's suffix so
            that loaders which look at the suffix can verify it.
        verify: ``verify(temporary_path, sha256)`` raises ``error`` when the file is not what was expected.
        by_hand: sentence appended to every error, telling the user where to get the file and where to save it.
        error: exception class raised for every failure.
        label: what is downloaded, for messages (default: the URL only).
        progress: ``progress(bytes_done, bytes_total)``; ``bytes_total`` is 0 when the server does not say.
        timeout: network timeout in seconds.
    """
    target = pathlib.Path(target)
    what = f"{label} from {source}" if label else source
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"cannot create the folder {target.parent}: {exc}. {by_hand}") from exc
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".part{target.suffix}", dir=target.parent)
    tmp = pathlib.Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                request = urllib.request.Request(source, headers={"User-Agent": "bokehme-comfyui"})
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    total = int(response.headers.get("Content-Length") or 0)
                    done = 0
                    if progress is not None:
                        progress(0, total)
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise error(f"could not download {what}: {reason}. {by_hand}") from exc
        if total and done != total:
            raise error(f"download of {source} stopped after {done} of {total} bytes. {by_hand}")
        sha = digest.hexdigest()
        verify(tmp, sha)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return sha
