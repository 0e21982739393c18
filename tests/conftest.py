"""Shared test fixtures. Tests never touch the network; data comes from ../shared and from the repo."""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
OFFICIAL = SHARED / "bokehme_official"
FIXTURE = OFFICIAL / "refs" / "small_a_K45_f90_g4.npz"
BENCH_DEV = SHARED / "bench_dev"

for _path in (ROOT, ROOT / "tests", ROOT / "tools"):  # bokehme_core, tests/helpers.py, tools/pack_loader.py
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from helpers import random_official_depth_weights  # noqa: E402
from pack_loader import import_pack  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

@pytest.fixture(scope="session")
def pack():
    """The node pack as ComfyUI loads it; ``pack.nodes.render`` etc. are the node modules."""
    return import_pack()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module on one torch thread (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): the scatter
    loops are many medium-sized torch ops, and on a shared 2-core machine a second OpenMP thread mostly adds
    contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def official_fixture():
    """The official numerical reference arrays (see ../shared/bokehme_official/README.md)."""
    if not FIXTURE.exists():
        pytest.fail(f"official fixture missing: {FIXTURE} (the ../shared folder must be present)")
    with np.load(FIXTURE, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)


@pytest.fixture
def serve_official(monkeypatch):
    """``serve_official(name, url)``: make the official weights ``name`` (a key of
    ``bokehme_core.weights.PROVENANCE``) download from ``url`` (a local file:// or http:// URL) for this test."""
    import dataclasses

    from bokehme_core import weights

    def serve(name: str, url: str) -> None:
        monkeypatch.setitem(weights.PROVENANCE, name, dataclasses.replace(weights.PROVENANCE[name], url=url))

    return serve


@pytest.fixture(scope="session")
def depth_weights():
    """``depth_weights(family, variant, seed=0)`` -> random official-layout state dict (see
    :func:`random_official_depth_weights`)."""
    return random_official_depth_weights


@pytest.fixture
def comfy(tmp_path, monkeypatch):
    """ComfyUI's modules (folder_paths, comfy.model_management, comfy.utils) replaced by the recording stand-in
    of tests/comfy_standin.py for this test, with its folders under ``tmp_path / "comfy"``."""
    from comfy_standin import ComfyStandIn

    return ComfyStandIn(tmp_path / "comfy").install(monkeypatch)


@pytest.fixture(scope="session")
def official_iunet_pth():
    """The official iunet.pth (../shared/bokehme_official/checkpoints)."""
    path = OFFICIAL / "checkpoints" / "iunet.pth"
    if not path.is_file():
        pytest.fail(f"official checkpoint missing: {path} (the ../shared folder must be present)")
    return path
