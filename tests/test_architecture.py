"""The pack's shape (docs/DEVELOPERS.md, "Package map"): every pipeline stage and constant is defined once, in
bokehme_core; nodes/ and training/ use the core's objects; dependencies point one way."""

from __future__ import annotations

import ast
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUTSIDE_CORE = ("nodes", "training", "bench", "tools")

#: stage functions and constants of the pipeline: defined in bokehme_core only
STAGE_NAMES = {
    "DEFOCUS_SCALE", "MASK_BLUR_FRACTION", "DEFAULT_TILE_SIZE", "MAX_K",
    "adaptive_scale", "lowres_size", "num_iunet_passes", "blend_mask", "gaussian_blur", "network_defocus",
    "gamma_norm", "arnet_stage", "iunet_stage", "render_neural", "dilate_defocus",
    "signed_defocus", "apply_highlight", "render_inputs", "prepare_disparity", "normalize_disparity",
    "depth_to_disparity", "repair_nonfinite", "match_size", "analytic_error_map", "fuse",
    "read_state_dict", "check_state_dict", "load_bundled_models", "download_weights",
}


def _python_files(folder: str) -> list:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if ".venv" not in p.parts)


def _definitions(path: pathlib.Path) -> set:
    """Functions, classes and names a module defines at module level (methods of node classes, such as the
    Fuse node's ``fuse``, are ComfyUI entry points, not stages)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _code_lines(path: pathlib.Path) -> dict:
    """line number -> the line's code without comments and string literals (docstrings, tooltips)."""
    import io
    import tokenize

    lines: dict = {}
    with io.open(path, encoding="utf-8") as f:
        for tok in tokenize.generate_tokens(f.readline):
            if tok.type in (tokenize.STRING, tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE):
                continue
            if getattr(tokenize, "FSTRING_START", None) is not None and tok.type in (
                tokenize.FSTRING_START, tokenize.FSTRING_MIDDLE, tokenize.FSTRING_END
            ):
                continue
            lines[tok.start[0]] = lines.get(tok.start[0], "") + " " + tok.string
    return lines


@pytest.mark.parametrize("folder", OUTSIDE_CORE)
def test_no_stage_or_constant_defined_outside_the_core(folder):
    offenders = {str(p.relative_to(ROOT)): sorted(_definitions(p) & STAGE_NAMES) for p in _python_files(folder)}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"pipeline stages / constants redefined outside bokehme_core: {offenders}"


@pytest.mark.parametrize("folder", OUTSIDE_CORE)
def test_no_formula_of_a_stage_outside_the_core(folder):
    """The literal formulas of the stages (the defocus unit, gamma normalisation, the highlight masks, the blend
    mask threshold) appear in the core only."""
    patterns = {
        "defocus unit": re.compile(r"/ 10(\.0)?(?![\d.])"),
        "gamma normalisation": re.compile(r"gamma - 1(\.0)? \) / 4"),
        "highlight mask": re.compile(r"tanh \( 200"),
        "highlight threshold": re.compile(r"220(\.0)? / 255"),
    }
    found = []
    for path in _python_files(folder):
        for number, code in _code_lines(path).items():
            for what, pattern in patterns.items():
                if pattern.search(code) and (what != "defocus unit" or "defocus" in code.lower()):
                    found.append(f"{path.relative_to(ROOT)}:{number} ({what}): {code.strip()}")
    assert not found, "\n".join(found)


def test_nodes_and_training_use_the_core_objects(pack):
    import bokehme_core.defocus
    import bokehme_core.disparity
    import bokehme_core.neural.stages
    import bokehme_core.weights

    sys.path.insert(0, str(ROOT / "training"))
    try:
        import common as training_common
    finally:
        sys.path.remove(str(ROOT / "training"))
    stages = bokehme_core.neural.stages
    assert training_common.network_defocus is stages.network_defocus
    assert training_common.gamma_norm is stages.gamma_norm
    assert pack.nodes.neural.stages is stages
    assert pack.nodes.neural.render_inputs is bokehme_core.defocus.render_inputs
    assert pack.nodes.render.render_inputs is bokehme_core.defocus.render_inputs
    assert pack.nodes.render.match_size is bokehme_core.disparity.match_size
    assert pack.nodes.disparity.core_disparity is bokehme_core.disparity
    assert pack.nodes.neural.load_bundled_models is bokehme_core.weights.load_bundled_models
    assert pack.nodes.neural.CheckpointError is bokehme_core.weights.CheckpointError


def test_aliased_core_modules_keep_their_own_spec(pack):
    # The pack's relative imports reach the core modules the tests use (tools/pack_loader.py); each must keep
    # its own __spec__: Python 3.12 turns __package__ != __spec__.parent into a warning at every later relative
    # import inside it, an error under this suite's warning filter.
    aliased = [name for name in sys.modules if name.startswith("comfyui_bokehme.bokehme_core.")]
    assert aliased, "the pack imported no core module through its package"
    for name in aliased:
        module = sys.modules[name]
        assert module.__spec__.name == module.__name__ and module.__spec__.parent == module.__package__, name


def test_training_scripts_import_stages_from_the_core():
    sources = {p.name: p.read_text(encoding="utf-8") for p in _python_files("training")}
    assert "from bokehme_core.neural.stages import" in sources["train_iunet.py"]
    assert "arnet_stage(" in sources["train_iunet.py"]  # ARNet's coarse input comes from the pipeline's stage
    assert "F.interpolate(image" not in sources["train_iunet.py"]


def test_dependencies_point_one_way():
    """bokehme_core imports nothing of the pack outside it; tools/ and bench/ never import tests/."""
    for path in _python_files("bokehme_core"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level > 0:  # a relative import stays inside the core
                target = _resolve_relative(path, node)
                assert target == "bokehme_core" or target.startswith("bokehme_core."), \
                    f"{path.relative_to(ROOT)} line {node.lineno}: {'.' * node.level}{node.module or ''} leaves bokehme_core"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    top = name.split(".")[0]
                    assert top not in ("nodes", "training", "tests", "tools", "bench", "comfy", "folder_paths",
                                       "server", "comfy_api"), f"{path.relative_to(ROOT)} imports {name}"
    for folder in ("tools", "bench"):
        for path in _python_files(folder):
            text = path.read_text(encoding="utf-8")
            assert '"tests"' not in text and "from tests" not in text and "import conftest" not in text, path


def test_weights_errors_share_one_base():
    from bokehme_core.depth import DepthCheckpointError, DepthDownloadError
    from bokehme_core.weights import CheckpointError, WeightsDownloadError

    assert issubclass(DepthCheckpointError, CheckpointError) and issubclass(CheckpointError, ValueError)
    assert DepthDownloadError is WeightsDownloadError


# --- import cycles inside the core ----------------------------------------------------------------------------

def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve_relative(path: pathlib.Path, node: ast.ImportFrom) -> str:
    """The absolute module a relative ``from`` import of the file ``path`` names ("" when it leaves the pack)."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    if node.level - 1 >= len(package):
        return ""
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(folder: str = "bokehme_core") -> dict:
    """module -> the modules of ``folder`` it imports (every import statement, at module level or inside a
    function: a lazy import closes a circle too). Importing a submodule is not counted as importing its parent
    package (Python initialises the package first, but a package's __init__ importing its submodules is no
    circle)."""
    modules = {_module_name(p): p for p in _python_files(folder)}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve_relative(path, node) if node.level else (node.module or "")
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:  # "pkg.module.attribute" -> "pkg.module"
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def import_cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_import_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "bokehme_core.scatter.table" in graph["bokehme_core.scatter"]  # from .table import ...
    assert "bokehme_core.scatter.numba_runtime" in graph["bokehme_core.error_map"]  # inside a function
    assert "bokehme_core.scatter._numba_kernels" in graph["bokehme_core.scatter.numba_backend"]  # from . import x


def test_no_import_cycles_in_the_core():
    cycles = import_cycles(import_graph())
    assert cycles == [], "import circles in bokehme_core: " + "; ".join(" <-> ".join(c) for c in cycles)

