"""Without numba (not installed, or broken) the pack falls back to the torch kernels: same results, one warning."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

CODE = r"""
import logging, sys
sys.modules["numba"] = None  # import numba -> ImportError, as on an install without it
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
import torch
import bokehme_core as bm
from bokehme_core.scatter import numba_backend
assert not numba_backend.available()
torch.manual_seed(0)
image = torch.rand(1, 3, 40, 56)
disparity = torch.rand(1, 1, 40, 56)
for mode in ("exact", "fast"):
    out = bm.render_classical(image, bm.signed_defocus(disparity, 9.0, 0.4), mode=mode, gamma=2.2).bokeh
    torch.save(out, sys.argv[1] + f"_{mode}.pt")
result = bm.render_bokehme(image, disparity, K=12.0, focus=0.4, classical_mode="fast")
assert torch.isfinite(result.bokeh).all()
print("ok")
"""


def test_pipeline_runs_without_numba_and_matches_the_compiled_kernels(tmp_path):
    import torch

    import bokehme_core as bm
    from bokehme_core.scatter import numba_backend

    out = subprocess.run([sys.executable, "-c", CODE, str(tmp_path / "torch")], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert "pip install numba" in out.stderr  # the one warning that says how to get the fast path
    assert out.stderr.count("pip install numba") == 1
    if not numba_backend.available():
        return
    torch.manual_seed(0)
    image, disparity = torch.rand(1, 3, 40, 56), torch.rand(1, 1, 40, 56)
    for mode in ("exact", "fast"):
        compiled = bm.render_classical(image, bm.signed_defocus(disparity, 9.0, 0.4), mode=mode, gamma=2.2,
                                       backend="numba").bokeh
        fallback = torch.load(tmp_path / f"torch_{mode}.pt", weights_only=True)
        assert float((compiled - fallback).abs().max()) < 1e-4, mode


RENDER_UNDER = r"""
import importlib, importlib.util, pathlib, sys
name = sys.argv[1]
root = pathlib.Path(sys.argv[2])
if name == "bokehme_core":
    core = importlib.import_module("bokehme_core")
else:  # the pack imported as ComfyUI does: a package named after its folder
    spec = importlib.util.spec_from_file_location(name, root / "__init__.py", submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    core = importlib.import_module(name + ".bokehme_core")
import torch
image = torch.rand(1, 3, 24, 32)
defocus = core.signed_defocus(torch.rand(1, 1, 24, 32), 6.0, 0.5)
for mode in ("fast", "exact"):
    assert torch.isfinite(core.render_classical(image, defocus, mode=mode).bokeh).all()
print("ok")
"""


def test_kernel_cache_written_under_another_import_name():
    """The CLI imports the core as ``bokehme_core``, ComfyUI as ``<pack folder>.bokehme_core``; numba's disk cache
    entries name the module they were compiled in. The second name must still render (compiling afresh)."""
    from bokehme_core.scatter import numba_backend

    if not numba_backend.available():
        import pytest

        pytest.skip("numba is not installed")
    for name in ("bokehme_core", "ComfyUI_BokehMe_test"):
        out = subprocess.run([sys.executable, "-c", RENDER_UNDER, name, str(ROOT)], cwd="/", capture_output=True,
                             text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip() == "ok"
