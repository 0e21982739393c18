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
