"""Common test fixtures. Tests never touch the network. Their data comes from the repository (tests/data) and,
for the tests marked ``needs_shared``, from the external folder ``helpers.SHARED`` (../shared: the official
BokehMe fixtures and weights); without it those tests are skipped with one reason, everything else runs."""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]

for _path in (ROOT, ROOT / "tests", ROOT / "tools"):  # bokehme_core, tests/helpers.py, tools/pack_loader.py
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from helpers import HAVE_SHARED, OFFICIAL, SHARED_REASON, random_official_depth_weights  # noqa: E402
from pack_loader import import_pack  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

# Fixtures that read the external data: a test that uses one (directly or through another fixture) is marked
# ``needs_shared`` automatically.
SHARED_FIXTURES = frozenset({"official_fixture", "official_checkpoints", "official_iunet_pth", "seed0_arnet_state"})


class _PackRootIsAFolder:
    """The repository root is the node pack: its ``__init__.py`` is ComfyUI's entry point, with relative imports.
    pytest would import it as a test package, which fails under a folder name that is not a Python identifier
    (``ComfyUI-BokehMe``, the default clone name) and errors every test; the root is collected as a plain folder.
    (A plugin, not a hook of this file: a conftest's hooks do not apply to the folder above it.)"""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path, parent):
        return pytest.Dir.from_parent(parent, path=path) if path == ROOT else None


def pytest_configure(config):
    config.pluginmanager.register(_PackRootIsAFolder(), "bokehme-pack-root")
    config.addinivalue_line(
        "markers", "needs_shared: reads the official BokehMe fixtures / weights of ../shared (skipped without it)")


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=SHARED_REASON)
    for item in items:
        if SHARED_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.needs_shared)
        if not HAVE_SHARED and item.get_closest_marker("needs_shared") is not None:
            item.add_marker(skip)

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


def _shared_file(path: pathlib.Path) -> pathlib.Path:
    if not path.is_file():  # the folder is there but incomplete: an error, not a skip
        pytest.fail(f"{path.name} missing from {path.parent}; {SHARED_REASON}")
    return path


@pytest.fixture(scope="session")
def official_fixture():
    """The official numerical reference arrays (K=45, focus 90/255, gamma 4; see the README of the official data)."""
    with np.load(_shared_file(OFFICIAL / "refs" / "small_a_K45_f90_g4.npz"), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def official_checkpoints():
    """The folder of the official IUNet in its three forms: iunet.pth (as shipped), iunet_model_state_dict.pth,
    iunet.safetensors."""
    for name in ("iunet.pth", "iunet_model_state_dict.pth", "iunet.safetensors"):
        _shared_file(OFFICIAL / "checkpoints" / name)
    return OFFICIAL / "checkpoints"


@pytest.fixture(scope="session")
def official_iunet_pth(official_checkpoints):
    """The official iunet.pth, as shipped (a training checkpoint holding numpy objects)."""
    return official_checkpoints / "iunet.pth"


@pytest.fixture(scope="session")
def seed0_arnet_state():
    """The official ARNet initialised with seed 0 by the official code (tensors shared by all tests: copy before
    changing them); its outputs on the official fixture are the ARNet parity reference."""
    with np.load(_shared_file(OFFICIAL / "refs" / "arnet_seed0_weights.npz")) as z:
        return {k: torch.from_numpy(z[k].copy()) for k in z.files}


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
