"""Import the node pack the way ComfyUI does, without ComfyUI (used by the tests and by the tools).

ComfyUI imports a custom-node folder as a package named after the folder; its nodes reach the core through
relative imports (``from ..bokehme_core import ...``).
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

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
    """Hands out the already imported module. The import system sets the alias's ``__spec__`` on it; putting the
    module's own spec back keeps ``__package__ == __spec__.parent`` (Python 3.12 warns on each later relative
    import of a module where they differ, and the tests turn that warning into an error)."""

    def __init__(self, module):
        self.module = module
        self.spec = module.__spec__

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        module.__spec__ = self.spec


def import_pack():
    """The pack at the repository root imported as ComfyUI imports it (package ``comfyui_bokehme``), once."""
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


