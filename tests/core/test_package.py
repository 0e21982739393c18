"""The core library is importable without ComfyUI and has no import-time side effects."""

import subprocess
import sys

import pathlib

import bokehme_core

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_import_loads_no_comfyui_module_and_public_names_resolve():
    code = (
        "import sys, bokehme_core\n"
        "names = [getattr(bokehme_core, n) for n in bokehme_core.__all__]\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('comfy', 'folder_paths', 'server', 'nodes', 'comfy_api'))\n"
        "assert not bad, bad\n"
        "print(len(names))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) == len(bokehme_core.__all__)


def test_plain_import_is_cheap_and_quiet():
    code = "import sys, bokehme_core; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.strip() == "False"  # nothing but the lazy name table is loaded


def test_unknown_attribute():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        bokehme_core.nope
