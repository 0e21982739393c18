"""Regenerate ``expected_inputs.json``: what the saved workflow files in this folder send to the server (the API
prompt the frontend builds from each file's ``widgets_values``), computed with the node definitions of the
commit that saved them.

The workflow files here are frozen copies of the bundled workflows as users saved them; the test
``tests/test_workflows.py::test_saved_workflows_keep_their_inputs`` checks that today's node definitions map
every saved widget value to the same input. Run this only when such a copy is added, never to make that test
pass: ``python tests/data/saved_workflows/make_expected_inputs.py``.
"""

from __future__ import annotations

import json
import pathlib
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

import workflow_runner as wr  # noqa: E402
from pack_loader import import_pack  # noqa: E402


def main() -> None:
    pack = import_pack()
    with tempfile.TemporaryDirectory() as tmp:
        classes = {**wr.core_stand_ins(pathlib.Path(tmp), pathlib.Path(tmp)), **pack.NODE_CLASS_MAPPINGS}
        expected = {}
        for path in sorted(HERE.glob("*.json")):
            if path.name == "expected_inputs.json":
                continue
            workflow = json.loads(path.read_text(encoding="utf-8"))
            expected[path.name] = wr.ui_to_api(workflow, classes)
    (HERE / "expected_inputs.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
