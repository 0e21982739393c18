"""Docs that cannot drift: the licences users read, the dependency lists, the README's Python, the public names
the docs mention, and no notes of how the project was built."""

from __future__ import annotations

import importlib
import pathlib
import re
import subprocess
import tomllib

import pytest
import torch
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NOTICE = ROOT / "NOTICE"
DOCS = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "training" / "README.md",
        ROOT / "bench" / "README.md"]


# --- licences ---------------------------------------------------------------------------------------------------

def test_readme_and_notice_state_the_licence_of_every_downloadable_file():
    from bokehme_core.weights import PROVENANCE

    readme, notice = README.read_text(encoding="utf-8"), NOTICE.read_text(encoding="utf-8")
    for source in PROVENANCE.values():
        assert f"| {source.display} | {source.licence} |" in readme, source.display
        assert f"  {source.display}: {source.licence}\n" in notice, source.display
    official = [s for s in PROVENANCE.values() if "BokehMe" in s.display]
    assert official and all("non-commercial" in s.licence for s in official)


@pytest.mark.parametrize("path", ["README.md", "NOTICE", "bokehme_core/weights.py", "docs/USER_GUIDE.md"])
def test_no_apache_claim_for_the_official_bokehme_files(path):
    text = (ROOT / path).read_text(encoding="utf-8")
    for line in text.splitlines():
        if "apache" in line.lower():
            assert not re.search(r"official|JuewenPeng|arnet\.pth|iunet\.pth", line, re.I), line


# --- dependencies and registry metadata --------------------------------------------------------------------------

def _requirements(path: pathlib.Path) -> list:
    lines = (line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def test_pyproject_dependencies_match_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["dependencies"] == _requirements(ROOT / "requirements.txt")
    comfy = project["tool"]["comfy"]
    for key in ("PublisherId", "DisplayName", "Icon"):
        assert comfy.get(key), key
    assert project["project"]["urls"]["Repository"].startswith("https://github.com/")
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["project"]["version"])
    import bokehme_core

    assert project["project"]["version"] == bokehme_core.__version__


# --- the README's Python runs -----------------------------------------------------------------------------------

def _python_snippets(path: pathlib.Path) -> list:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.parametrize("path", [README, ROOT / "docs" / "USER_GUIDE.md"], ids=lambda p: p.name)
def test_python_snippets_of_the_docs_run(path, tmp_path, monkeypatch):
    """Every Python block of README.md and the user guide, as written, on the bundled example shrunk to 1/4."""
    snippets = _python_snippets(path)
    assert snippets
    demo = tmp_path / "assets" / "demo"
    demo.mkdir(parents=True)
    for name in ("image.png", "disparity.png"):
        with Image.open(ROOT / "assets" / "demo" / name) as im:
            im.resize((im.width // 4, im.height // 4), Image.Resampling.BOX).save(demo / name)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for code in snippets:
            namespace: dict = {}
            exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 (the README's own code)
    finally:
        torch.set_num_threads(threads)
    if path == README:
        assert (tmp_path / "bokeh.png").is_file()


# --- public names -------------------------------------------------------------------------------------------------

def test_every_public_name_resolves():
    import bokehme_core

    for name in bokehme_core.__all__:
        assert getattr(bokehme_core, name) is not None, name


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_names_the_docs_present_as_public_exist(path):
    """``bm.X`` / ``bokehme_core.X`` in the docs: a public name of the package or one of its modules."""
    import bokehme_core

    text = path.read_text(encoding="utf-8")
    missing = []
    for match in re.finditer(r"\b(?:bm|bokehme_core)\.([A-Za-z_]\w*)(?:\.([A-Za-z_]\w*))?", text):
        name, attr = match.groups()
        if name in bokehme_core.__all__:
            continue
        try:
            module = importlib.import_module(f"bokehme_core.{name}")
        except ModuleNotFoundError:
            missing.append(match.group(0))
            continue
        if attr is not None and not hasattr(module, attr):
            try:
                importlib.import_module(f"bokehme_core.{name}.{attr}")
            except ModuleNotFoundError:
                missing.append(match.group(0))
    assert not missing, f"{path.name} names what does not exist: {sorted(set(missing))}"


# --- the repository speaks of the product, not of how it was built ---------------------------------------------

_HISTORY_WORDS = re.compile(r"\b(?:work )?sessions? \d|\b(?:this|next|later|earlier|a later|previous) session\b|"
                            r"\bissues? #?\d+\b|\bissue-\d+", re.I)


def test_no_file_speaks_of_sessions_or_issue_numbers():
    try:
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    hits = []
    for name in files:
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".txt", ".toml", ".json", ".js", ".sh", ""} or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        hits += [f"{name}: {m.group(0)}" for m in _HISTORY_WORDS.finditer(text)]
    assert not hits, hits[:20]
