"""The frontend extension (web/js): what it relies on in the Python nodes, and its geometry run in Node.js.

The extension itself is checked in the real frontend by tools/verify_in_comfyui.py (a real click in headless
Chromium); here: the names it uses exist, the files parse, and the click -> (x, y) mapping is right.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
WEB = ROOT / "web" / "js"
EXTENSION = WEB / "bokehme_focus.js"
GEOMETRY = WEB / "bokehme_focus_geometry.js"
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="Node.js not installed")


def test_web_directory_is_served(pack):
    assert (ROOT / pack.WEB_DIRECTORY).resolve() == WEB.resolve()
    assert EXTENSION.is_file() and GEOMETRY.is_file()


def test_extension_names_match_the_focus_node(pack):
    source = EXTENSION.read_text()
    node_id = re.search(r'const NODE_ID = "([^"]+)"', source).group(1)
    assert node_id in pack.NODE_CLASS_MAPPINGS
    spec = pack.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()["required"]
    for name in ("x", "y"):
        assert f'"{name}"' in source
        kind, options = spec[name]
        assert kind == "FLOAT" and options["min"] == 0.0 and options["max"] == 1.0
        assert options["step"] == 0.001  # the extension rounds clicks to this step
    assert "point" in spec["mode"][0] and 'setWidget(node, "mode", "point")' in source
    # the server side reports the focus value in its UI message, which the extension shows
    assert "message?.focus?.[0]" in source


def test_extension_imports_only_comfy_app_and_its_geometry():
    imports = re.findall(r'^import .* from "([^"]+)";', EXTENSION.read_text(), flags=re.M)
    assert imports == ["../../scripts/app.js", "./bokehme_focus_geometry.js"]
    assert "import" not in re.sub(r"//.*", "", GEOMETRY.read_text()).split("export")[0]


@needs_node
@pytest.mark.parametrize("path", [EXTENSION, GEOMETRY], ids=lambda p: p.name)
def test_javascript_parses(path):
    result = subprocess.run([NODE, "--check", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def run_geometry(expression: str):
    script = f"import * as g from {json.dumps(GEOMETRY.as_uri())}; console.log(JSON.stringify({expression}));"
    result = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@needs_node
def test_fit_image_rect_letterboxes_and_never_enlarges():
    # a wide image in a tall area: full width, centred vertically
    assert run_geometry("g.fitImageRect(0, 100, 400, 600, 800, 400)") == {"x": 0, "y": 300, "w": 400, "h": 200}
    # a small image is not enlarged, only centred
    assert run_geometry("g.fitImageRect(0, 0, 400, 400, 100, 50)") == {"x": 150, "y": 175, "w": 100, "h": 50}
    assert run_geometry("g.fitImageRect(0, 0, 0, 400, 100, 50)") is None


@needs_node
def test_click_maps_to_normalised_point():
    rect = '{"x": 10, "y": 20, "w": 200, "h": 100}'
    assert run_geometry(f"g.clickToNormalized({rect}, 10, 20)") == {"x": 0, "y": 0}
    assert run_geometry(f"g.clickToNormalized({rect}, 210, 120)") == {"x": 1, "y": 1}
    assert run_geometry(f"g.clickToNormalized({rect}, 60, 95)") == {"x": 0.25, "y": 0.75}
    assert run_geometry(f"g.clickToNormalized({rect}, 60.1234, 20.0333)") == {"x": 0.251, "y": 0}
    assert run_geometry(f"g.clickToNormalized({rect}, 9, 50)") is None  # left of the image (letterbox)
    assert run_geometry(f"g.clickToNormalized({rect}, 50, 121)") is None
    # round trip with the marker position
    assert run_geometry(f"g.normalizedToPoint({rect}, 0.25, 0.75)") == {"x": 60, "y": 95}
    assert run_geometry(f"g.normalizedToPoint({rect}, 7, null)") == {"x": 210, "y": 20}


HELP = WEB / "docs"  # the frontend fetches /extensions/<pack>/docs/<NodeId>.md for its node help panel


def test_help_pages_exist_for_the_main_nodes(pack):
    pages = {p.stem for p in HELP.glob("*.md")}
    assert {"BokehMe", "BokehMeClassicalRender", "BokehMeFocus", "BokehMeEstimateDisparity"} <= pages
    unknown = pages - set(pack.NODE_CLASS_MAPPINGS)
    assert not unknown, f"help pages for unknown node ids: {unknown}"


@pytest.mark.parametrize("node_id", ["BokehMe", "BokehMeClassicalRender", "BokehMeFocus", "BokehMeEstimateDisparity"])
def test_help_pages_name_real_inputs(pack, node_id):
    """Every input the node has that a help page table lists by name in its first column exists."""
    text = (HELP / f"{node_id}.md").read_text()
    spec = pack.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()
    inputs = set(spec.get("required", {})) | set(spec.get("optional", {}))
    rows = re.findall(r"^\| ([a-z_]+(?:, [a-z_]+)*) \|", text, flags=re.M)
    named = {name for row in rows for name in row.split(", ")} - {"input", "output", "mode"}
    outputs = set(getattr(pack.NODE_CLASS_MAPPINGS[node_id], "RETURN_NAMES", ()))
    modes = {"point", "value", "mask"}
    assert named and named <= inputs | outputs | modes, named - inputs - outputs - modes
