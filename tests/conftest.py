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

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(min(2, torch.get_num_threads()))

# The ComfyUI pack (the repository root) imported the way ComfyUI imports it: as a package named after its
# folder, whose nodes reach the core through relative imports. Aliasing its bokehme_core to the top-level one
# keeps a single copy of every core class in the test process.
PACK_NAME = "comfyui_bokehme"


class _CoreAliasFinder:
    """Resolves ``comfyui_bokehme.bokehme_core.<sub>`` to the already imported ``bokehme_core.<sub>``, so that
    the nodes' relative imports of core submodules share the classes of the tests (isinstance checks)."""

    prefix = f"{PACK_NAME}.bokehme_core."

    def find_spec(self, name, path=None, target=None):
        import importlib
        import importlib.util

        if not name.startswith(self.prefix):
            return None
        real = importlib.import_module("bokehme_core." + name[len(self.prefix):])
        return importlib.util.spec_from_loader(name, _AliasLoader(real))


class _AliasLoader:
    def __init__(self, module):
        self.module = module

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        pass


def _import_pack():
    import importlib.util

    import bokehme_core

    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    sys.modules[f"{PACK_NAME}.bokehme_core"] = bokehme_core
    sys.meta_path.insert(0, _CoreAliasFinder())
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def pack():
    """The node pack as ComfyUI loads it; ``pack.nodes.render`` etc. are the node modules."""
    return _import_pack()


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
