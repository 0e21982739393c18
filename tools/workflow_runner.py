"""Execute ComfyUI UI-format workflows (the JSON the ComfyUI frontend saves) without ComfyUI.

Used by ``tests/test_workflows.py`` and the tools in ``tools/`` to run the bundled ``workflows/*.json`` through the real node classes of
the pack. It does the two steps ComfyUI does, separately and checkably:

1. :func:`ui_to_api` -- what the frontend does when you press *Run* (``graphToPrompt``): drop the
   frontend-only nodes (Note, MarkdownNote, PrimitiveNode, Reroute), drop muted nodes, route links through
   bypassed nodes, map every node's ``widgets_values`` onto its widget inputs and resolve ``links`` into
   ``[origin_id, origin_slot]`` references. Result: an API-format prompt
   ``{"<id>": {"class_type": ..., "inputs": {...}}}``, the same thing ``POST /prompt`` receives.
2. :func:`execute_prompt` -- what the server does: validate (unknown node type, missing required input,
   type mismatch of a link, value outside min/max, value not in a combo list), then execute the nodes that
   the output nodes need, in dependency order, with ComfyUI's list semantics (``INPUT_IS_LIST`` /
   ``OUTPUT_IS_LIST``), collecting ``{"ui": ...}`` results, and check every output value
   (:func:`check_output_value`: IMAGE/MASK finite and in [0, 1], FLOAT finite, ...).

Widget mapping (facts read from ComfyUI frontend 1.49.x, the one ComfyUI 0.33 ships): the frontend creates
one widget per input of a widget type (INT, FLOAT, STRING, BOOLEAN, COMBO = a list of options or the type
"COMBO"), in the order of ``INPUT_TYPES()["required"]`` then ``["optional"]``, skipping inputs with
``forceInput``. Extra widgets follow their input: an INT with ``control_after_generate`` (or, when the
option is absent, an INT named ``seed`` or ``noise_seed``) and a FLOAT with ``control_after_generate`` get
one hidden ``control_after_generate`` combo; a COMBO with ``control_after_generate`` gets that plus a
``control_filter_list`` string; a COMBO with ``image_upload`` gets an ``upload`` button whose saved value is
``"image"``. ``widgets_values`` holds one value per widget in that order -- also for widgets converted to an
input and linked (the link wins). The control widgets are saved in the workflow but never sent to the
server. Anything else (IMAGE, MASK, custom types) is a socket and only takes a link.

Nodes that need what tests cannot have (a Stable Diffusion checkpoint) are stand-ins that are *skipped*:
they and everything downstream of them are reported as skipped with the reason, never silently passed.

Command line (a quick check of a workflow file with the real pack and the stand-ins)::

    .venv/bin/python tools/workflow_runner.py workflows/bokehme_basic.json [--input-dir DIR] [--api OUT.json]
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

# Frontend-only node types: the frontend never sends them to the server.
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
PRIMITIVE_TYPE = "PrimitiveNode"
REROUTE_TYPE = "Reroute"
VIRTUAL_TYPES = NOTE_TYPES | {PRIMITIVE_TYPE, REROUTE_TYPE}

# LiteGraph node modes: 0 always (normal), 2 never (muted), 4 bypass.
MODE_NORMAL, MODE_MUTED, MODE_BYPASS = 0, 2, 4

WIDGET_SCALAR_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN"})
LEGACY_SEED_NAMES = frozenset({"seed", "noise_seed"})
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize", "increment-wrap")


class WorkflowError(ValueError):
    """A workflow that ComfyUI would refuse or fail on; the message names the node (id and type)."""


# --- widget layout -----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class WidgetSlot:
    """One entry of a node's ``widgets_values``.

    ``input_name`` is the node input the value belongs to; ``kind`` is "value" for the input's own widget
    and "control" / "filter" / "upload" for the frontend-only widgets that follow it (saved in the workflow,
    never sent to the server).
    """

    input_name: str
    kind: str
    input_type: Any = None
    options: Mapping = dataclasses.field(default_factory=dict)


def _input_spec(spec) -> tuple[Any, dict]:
    """``("INT", {...})`` / ``(["a", "b"],)`` / ``("IMAGE",)`` -> (type, options)."""
    if not isinstance(spec, (tuple, list)) or not spec:
        raise WorkflowError(f"input spec must be a non-empty tuple (type, options), got {spec!r}")
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
    return spec[0], dict(options)


def is_combo_type(input_type) -> bool:
    return isinstance(input_type, (list, tuple)) or input_type == "COMBO"


def combo_options(input_type, options: Mapping) -> list | None:
    """The allowed values of a combo input, or None when the list is not known (a stand-in's model list)."""
    if isinstance(input_type, (list, tuple)):
        return list(input_type)
    return options.get("options")


def is_widget_input(input_type, options: Mapping) -> bool:
    """True if the frontend shows this input as a widget (it then has a ``widgets_values`` entry)."""
    if options.get("forceInput") or options.get("defaultInput"):
        return False
    return is_combo_type(input_type) or input_type in WIDGET_SCALAR_TYPES


def widget_layout(input_types: Mapping) -> list[WidgetSlot]:
    """The widgets the frontend creates for a node with these ``INPUT_TYPES()``, in ``widgets_values`` order."""
    slots: list[WidgetSlot] = []
    for section in ("required", "optional"):
        for name, spec in (input_types.get(section) or {}).items():
            input_type, options = _input_spec(spec)
            if not is_widget_input(input_type, options):
                continue
            slots.append(WidgetSlot(name, "value", input_type, options))
            control = options.get("control_after_generate")
            if input_type == "INT" and control is None:
                control = name in LEGACY_SEED_NAMES
            if control and input_type in ("INT", "FLOAT"):
                slots.append(WidgetSlot(name, "control"))
            elif control and is_combo_type(input_type):
                slots.append(WidgetSlot(name, "control"))
                slots.append(WidgetSlot(name, "filter"))
            if is_combo_type(input_type) and options.get("image_upload"):
                slots.append(WidgetSlot(name, "upload"))
    return slots


def all_inputs(input_types: Mapping) -> dict[str, tuple[str, Any, dict]]:
    """name -> (section, type, options) for the required and optional inputs."""
    out = {}
    for section in ("required", "optional"):
        for name, spec in (input_types.get(section) or {}).items():
            input_type, options = _input_spec(spec)
            out[name] = (section, input_type, options)
    return out


# --- UI format -> API format ------------------------------------------------------------------------------

def _where(node: Mapping) -> str:
    return f"node {node.get('id')} ({node.get('type')})"


def _index_links(workflow: Mapping) -> dict[int, dict]:
    links = {}
    for entry in workflow.get("links", []):
        if isinstance(entry, Mapping):  # newer serialisation: objects
            link = {k: entry[k] for k in ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")}
        else:
            if len(entry) != 6:
                raise WorkflowError(
                    f"link {entry!r} must be [id, origin_id, origin_slot, target_id, target_slot, type]")
            link = dict(zip(("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"), entry))
        if link["id"] in links:
            raise WorkflowError(f"link id {link['id']} is used twice")
        links[link["id"]] = link
    return links


def check_ui_structure(workflow: Mapping) -> None:
    """Structural checks the frontend relies on: unique ids, links consistent with both end nodes,
    ``last_node_id`` / ``last_link_id`` not below the ids in use (the frontend numbers new nodes from them)."""
    if "definitions" in workflow and workflow["definitions"].get("subgraphs"):
        raise WorkflowError("subgraphs are not supported by this runner; flatten the workflow")
    nodes = workflow.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise WorkflowError("workflow has no 'nodes' list: is this an API-format prompt instead of a UI workflow?")
    by_id = {}
    for node in nodes:
        for key in ("id", "type"):
            if key not in node:
                raise WorkflowError(f"a node lacks {key!r}: {json.dumps(node)[:200]}")
        if node["id"] in by_id:
            raise WorkflowError(f"node id {node['id']} is used twice")
        by_id[node["id"]] = node
    links = _index_links(workflow)
    if workflow.get("last_node_id", max(by_id)) < max(by_id):
        raise WorkflowError(f"last_node_id {workflow['last_node_id']} is below the largest node id {max(by_id)}")
    if links and workflow.get("last_link_id", max(links)) < max(links):
        raise WorkflowError(f"last_link_id {workflow['last_link_id']} is below the largest link id {max(links)}")
    for link in links.values():
        for end in ("origin_id", "target_id"):
            if link[end] not in by_id:
                raise WorkflowError(f"link {link['id']} refers to missing node {link[end]}")
        target = by_id[link["target_id"]]
        inputs = target.get("inputs") or []
        slot = link["target_slot"]
        if not 0 <= slot < len(inputs) or inputs[slot].get("link") != link["id"]:
            raise WorkflowError(f"link {link['id']} targets input slot {slot} of {_where(target)}, "
                                f"but that slot does not hold the link")
        origin = by_id[link["origin_id"]]
        outputs = origin.get("outputs") or []
        oslot = link["origin_slot"]
        if not 0 <= oslot < len(outputs) or link["id"] not in (outputs[oslot].get("links") or []):
            raise WorkflowError(f"link {link['id']} starts at output slot {oslot} of {_where(origin)}, "
                                f"but that output does not list the link")
    for node in nodes:
        for i, inp in enumerate(node.get("inputs") or []):
            if inp.get("link") is not None and inp["link"] not in links:
                raise WorkflowError(f"{_where(node)} input {inp.get('name')!r} refers to missing link {inp['link']}")


def map_widget_values(node: Mapping, input_types: Mapping) -> dict[str, Any]:
    """``widgets_values`` of a UI node -> {input name: value} for the inputs the server receives.

    Raises :class:`WorkflowError` when the count differs from the node's widgets, when a control widget
    holds something other than a control mode, or when ``widgets_values`` is a dict (a format some custom
    packs use; not the one core nodes and this pack write)."""
    values = node.get("widgets_values", [])
    if isinstance(values, Mapping):
        raise WorkflowError(f"{_where(node)}: widgets_values is a dict; expected a list in widget order")
    layout = widget_layout(input_types)
    if len(values) != len(layout):
        names = [s.input_name if s.kind == "value" else f"{s.input_name}:{s.kind}" for s in layout]
        raise WorkflowError(f"{_where(node)}: widgets_values has {len(values)} values {values!r}, "
                            f"the node has {len(layout)} widgets {names}")
    mapped = {}
    for slot, value in zip(layout, values):
        if slot.kind == "value":
            mapped[slot.input_name] = value
        elif slot.kind == "control" and value not in CONTROL_VALUES:
            raise WorkflowError(f"{_where(node)}: control_after_generate of {slot.input_name!r} must be one of "
                                f"{list(CONTROL_VALUES)}, got {value!r} (a widget value out of place?)")
    return mapped


def ui_to_api(workflow: Mapping, node_classes: Mapping[str, type]) -> dict[str, dict]:
    """Translate a UI-format workflow into the API-format prompt the frontend would queue.

    ``node_classes``: node id -> class (the pack's ``NODE_CLASS_MAPPINGS`` merged with stand-ins of the core
    nodes used). Raises :class:`WorkflowError` for an unknown node type, a wrong widget count, a link to an
    input the node does not have, or a broken link table.
    """
    check_ui_structure(workflow)
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = _index_links(workflow)

    for node in nodes.values():
        if node["type"] not in VIRTUAL_TYPES and node["type"] not in node_classes:
            raise WorkflowError(f"{_where(node)}: unknown node type {node['type']!r} (not in the pack and "
                                f"not a known core node); ComfyUI shows it as missing")
        if node["type"] in NOTE_TYPES and (not node.get("widgets_values") or
                                           not isinstance(node["widgets_values"][0], str)):
            raise WorkflowError(f"{_where(node)}: a note needs its text as widgets_values[0]")

    def resolve(link_id: int, want_type: str | None, seen: frozenset = frozenset()):
        """Follow a link back through Reroute and bypassed nodes to a real output: (node id, slot) or None
        (muted origin: the input is dropped, as the frontend does)."""
        link = links[link_id]
        origin = nodes[link["origin_id"]]
        if origin["id"] in seen:
            raise WorkflowError(f"link cycle through {_where(origin)}")
        mode = origin.get("mode", MODE_NORMAL)
        if origin["type"] == REROUTE_TYPE:
            upstream = (origin.get("inputs") or [{}])[0].get("link")
            return None if upstream is None else resolve(upstream, want_type, seen | {origin["id"]})
        if origin["type"] == PRIMITIVE_TYPE:
            return ("primitive", origin)
        if mode == MODE_MUTED:
            return None
        if mode == MODE_BYPASS:
            out_type = (origin.get("outputs") or [])[link["origin_slot"]].get("type")
            inputs = origin.get("inputs") or []
            same_slot = link["origin_slot"]
            candidates = ([inputs[same_slot]] if same_slot < len(inputs) else []) + list(inputs)
            for inp in candidates:
                if inp.get("link") is not None and inp.get("type") == out_type:
                    return resolve(inp["link"], want_type, seen | {origin["id"]})
            return None
        return (str(origin["id"]), link["origin_slot"])

    prompt: dict[str, dict] = {}
    for node in sorted(nodes.values(), key=lambda n: n["id"]):
        if node["type"] in VIRTUAL_TYPES or node.get("mode", MODE_NORMAL) in (MODE_MUTED, MODE_BYPASS):
            continue
        cls = node_classes[node["type"]]
        input_types = cls.INPUT_TYPES()
        known = all_inputs(input_types)
        inputs: dict[str, Any] = dict(map_widget_values(node, input_types))
        frontend_only = {"upload"} if any(s.kind == "upload" for s in widget_layout(input_types)) else set()
        for inp in node.get("inputs") or []:
            name = (inp.get("widget") or {}).get("name", inp.get("name"))
            if name in frontend_only and inp.get("link") is None:
                continue
            if name not in known:
                raise WorkflowError(f"{_where(node)}: has an input {name!r} that {node['type']} does not define "
                                    f"(inputs: {sorted(known)})")
            if inp.get("link") is None:
                continue
            source = resolve(inp["link"], inp.get("type"))
            if source is None:
                inputs.pop(name, None)
            elif source[0] == "primitive":
                primitive = source[1]
                pv = primitive.get("widgets_values") or []
                if not pv:
                    raise WorkflowError(f"{_where(primitive)}: a PrimitiveNode needs its value in widgets_values[0]")
                inputs[name] = pv[0]
            else:
                inputs[name] = [source[0], source[1]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                   "_meta": {"title": node.get("title", node["type"])}}
    return prompt


# --- validation and execution (the server side) -----------------------------------------------------------

def _types_compatible(received, expected) -> bool:
    if received == expected or "*" in (received, expected):
        return True
    if isinstance(received, (list, tuple)) and expected == "COMBO":
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    return bool(set(received.split(",")) & set(expected.split(",")))


def validate_prompt(prompt: Mapping[str, Mapping], node_classes: Mapping[str, type]) -> None:
    """The server's checks before anything runs (ComfyUI's ``validate_inputs``); raises :class:`WorkflowError`
    listing every problem found."""
    errors = []
    outputs = [nid for nid, n in prompt.items()
               if getattr(node_classes.get(n["class_type"]), "OUTPUT_NODE", False)]
    if not outputs:
        errors.append("the prompt has no output node (SaveImage, PreviewImage, ...): ComfyUI refuses it")
    for nid, node in prompt.items():
        where = f"node {nid} ({node['class_type']})"
        cls = node_classes.get(node["class_type"])
        if cls is None:
            errors.append(f"{where}: unknown node type")
            continue
        known = all_inputs(cls.INPUT_TYPES())
        for name, (section, input_type, options) in known.items():
            if name not in node["inputs"]:
                if section == "required":
                    errors.append(f"{where}: required input {name!r} is missing")
                continue
            value = node["inputs"][name]
            if isinstance(value, list):
                origin_id, slot = value
                if origin_id not in prompt:
                    errors.append(f"{where}: input {name!r} is linked to node {origin_id}, which is not in the prompt")
                    continue
                origin_cls = node_classes[prompt[origin_id]["class_type"]]
                if not 0 <= slot < len(origin_cls.RETURN_TYPES):
                    errors.append(f"{where}: input {name!r} is linked to missing output {slot} of node {origin_id}")
                    continue
                received = origin_cls.RETURN_TYPES[slot]
                if not _types_compatible(received, "COMBO" if is_combo_type(input_type) else input_type):
                    errors.append(f"{where}: input {name!r} expects {input_type}, linked output gives {received}")
                continue
            errors.extend(f"{where}: {e}" for e in _check_widget_value(name, value, input_type, options))
    if errors:
        raise WorkflowError("invalid prompt:\n  " + "\n  ".join(errors))


def _check_widget_value(name: str, value, input_type, options: Mapping) -> list[str]:
    if is_combo_type(input_type):
        allowed = combo_options(input_type, options)
        if allowed is not None and value not in allowed:
            return [f"{name!r} = {value!r} is not in the list {allowed}"]
        return []
    if input_type == "INT" and (isinstance(value, bool) or not isinstance(value, int)):
        return [f"{name!r} must be an INT, got {value!r}"]
    if input_type == "FLOAT" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return [f"{name!r} must be a FLOAT, got {value!r}"]
    if input_type == "STRING" and not isinstance(value, str):
        return [f"{name!r} must be a STRING, got {value!r}"]
    if input_type == "BOOLEAN" and not isinstance(value, bool):
        return [f"{name!r} must be a BOOLEAN, got {value!r}"]
    if input_type in ("INT", "FLOAT"):
        if "min" in options and value < options["min"]:
            return [f"{name!r} = {value} is smaller than min {options['min']}"]
        if "max" in options and value > options["max"]:
            return [f"{name!r} = {value} is bigger than max {options['max']}"]
    return []


@dataclasses.dataclass
class NodeRun:
    """What happened to one node: ``status`` is "ran" or "skipped" (``reason`` says why)."""

    node_id: str
    class_type: str
    status: str
    outputs: list | None = None  # one list per output (ComfyUI list semantics)
    ui: dict | None = None
    reason: str = ""
    seconds: float = 0.0


@dataclasses.dataclass
class RunResult:
    prompt: dict
    nodes: dict[str, NodeRun]

    def ran(self, class_type: str) -> list[NodeRun]:
        return [r for r in self.nodes.values() if r.class_type == class_type and r.status == "ran"]

    def output(self, node_id, slot: int = 0):
        """The (first) value of one output of a node that ran."""
        run = self.nodes[str(node_id)]
        if run.status != "ran":
            raise WorkflowError(f"node {node_id} ({run.class_type}) did not run: {run.status} {run.reason}")
        return run.outputs[slot][0]

    @property
    def skipped(self) -> dict[str, str]:
        return {nid: r.reason for nid, r in self.nodes.items() if r.status == "skipped"}


def _needed_nodes(prompt: Mapping, node_classes: Mapping) -> list[str]:
    """Nodes the output nodes depend on, in a dependency order (ComfyUI runs nothing else)."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(nid: str, path: tuple):
        if state.get(nid) == "done":
            return
        if state.get(nid) == "visiting":
            raise WorkflowError("dependency cycle: " + " -> ".join(path + (nid,)))
        state[nid] = "visiting"
        for value in prompt[nid]["inputs"].values():
            if isinstance(value, list):
                visit(value[0], path + (nid,))
        state[nid] = "done"
        order.append(nid)

    for nid in sorted(prompt, key=int):
        if getattr(node_classes[prompt[nid]["class_type"]], "OUTPUT_NODE", False):
            visit(nid, ())
    return order


def check_output_value(value, output_type: str, where: str) -> None:
    """Plausibility of one output value by ComfyUI type; raises :class:`WorkflowError`.

    IMAGE: float tensor (B,H,W,C), C in {1,3,4}, B >= 1, finite, in [0,1]. MASK: float tensor (B,H,W),
    finite, in [0,1]. FLOAT: finite number. INT: int. BOKEHME_DEFOCUS: finite float tensor (B,1,H,W).
    Other types must only be non-None.
    """
    def fail(msg):
        raise WorkflowError(f"{where}: {output_type} output {msg}")

    if value is None:
        fail("is None")
    if output_type in ("IMAGE", "MASK", "BOKEHME_DEFOCUS"):
        if not isinstance(value, torch.Tensor):
            fail(f"must be a torch tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            fail(f"must be a float tensor, got {value.dtype}")
        ndim = {"IMAGE": 4, "MASK": 3, "BOKEHME_DEFOCUS": 4}[output_type]
        if value.ndim != ndim or value.shape[0] < 1 or value.numel() == 0:
            fail(f"must have {ndim} dims and a batch >= 1, got shape {tuple(value.shape)}")
        if output_type == "IMAGE" and value.shape[-1] not in (1, 3, 4):
            fail(f"must be (B,H,W,C) with C in 1,3,4, got shape {tuple(value.shape)}")
        if output_type == "BOKEHME_DEFOCUS" and value.shape[1] != 1:
            fail(f"must be (B,1,H,W), got shape {tuple(value.shape)}")
        if not torch.isfinite(value).all():
            fail("has NaN or inf values")
        if output_type != "BOKEHME_DEFOCUS":
            lo, hi = float(value.min()), float(value.max())
            if lo < -1e-6 or hi > 1 + 1e-6:
                fail(f"must be in [0,1], got [{lo:.4g}, {hi:.4g}]")
    elif output_type == "FLOAT":
        if isinstance(value, torch.Tensor):
            if not torch.isfinite(value).all():
                fail("has NaN or inf values")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            fail(f"must be a finite number, got {value!r}")
    elif output_type == "INT":
        if isinstance(value, bool) or not isinstance(value, int):
            fail(f"must be an int, got {value!r}")


def _split_result(result, cls, where: str):
    """A node function's return value -> (outputs tuple, ui dict or None)."""
    ui = None
    if isinstance(result, Mapping):
        ui = result.get("ui")
        if "result" not in result:
            if cls.RETURN_TYPES:
                raise WorkflowError(
                    f"{where}: returned a dict without 'result' but declares outputs {cls.RETURN_TYPES}")
            return (), ui
        result = result["result"]
    if not isinstance(result, tuple):
        raise WorkflowError(f"{where}: must return a tuple (or a dict with 'result'), got {type(result).__name__}")
    if len(result) != len(cls.RETURN_TYPES):
        raise WorkflowError(f"{where}: returned {len(result)} values, RETURN_TYPES has {len(cls.RETURN_TYPES)}")
    return result, ui


def execute_prompt(prompt: Mapping[str, Mapping], node_classes: Mapping[str, type], *,
                   on_node: Callable[[NodeRun], None] | None = None) -> RunResult:
    """Validate and run an API-format prompt with the given node classes, ComfyUI style.

    A class with a ``SKIP_REASON`` attribute (the checkpoint stand-ins) is not run: it and every node that
    takes one of its outputs are recorded as skipped. A class with ``IGNORES_LINKED_INPUTS = True`` (a
    test's replacement for a whole upstream branch, e.g. a decoded generated image) runs without its links.
    Every output of every node that ran is checked with
    :func:`check_output_value`. Node exceptions propagate with the node named.
    """
    import time

    validate_prompt(prompt, node_classes)
    results: dict[str, NodeRun] = {}
    for nid in _needed_nodes(prompt, node_classes):
        node = prompt[nid]
        cls = node_classes[node["class_type"]]
        where = f"node {nid} ({node['class_type']})"
        ignore_links = getattr(cls, "IGNORES_LINKED_INPUTS", False)  # a test's stand-in for an upstream branch
        linked = {} if ignore_links else {k: v for k, v in node["inputs"].items() if isinstance(v, list)}
        skipped_by = [v[0] for v in linked.values() if results[v[0]].status == "skipped"]
        if getattr(cls, "SKIP_REASON", None) or skipped_by:
            reason = cls.SKIP_REASON if getattr(cls, "SKIP_REASON", None) else \
                f"input from skipped node {skipped_by[0]} ({results[skipped_by[0]].reason})"
            results[nid] = NodeRun(nid, node["class_type"], "skipped", reason=reason)
            continue
        known = all_inputs(cls.INPUT_TYPES())
        data = {}  # input name -> list of values (ComfyUI list semantics)
        for name, value in node["inputs"].items():
            if name not in known or (isinstance(value, list) and ignore_links):
                continue  # e.g. LoadImage's "upload": the server ignores inputs the node does not define
            data[name] = results[value[0]].outputs[value[1]] if isinstance(value, list) else [value]
        started = time.perf_counter()
        func = getattr(cls(), cls.FUNCTION)
        calls = []
        if getattr(cls, "INPUT_IS_LIST", False):
            calls.append(data)
        else:
            n = max((len(v) for v in data.values()), default=1)
            calls.extend({k: v[i if i < len(v) else -1] for k, v in data.items()} for i in range(n))
        returned = []
        uis = []
        for kwargs in calls:
            try:
                out, ui = _split_result(func(**kwargs), cls, where)
            except WorkflowError:
                raise
            except Exception as exc:
                raise WorkflowError(f"{where} raised {type(exc).__name__}: {exc}") from exc
            returned.append(out)
            if ui:
                uis.append(ui)
        output_is_list = getattr(cls, "OUTPUT_IS_LIST", (False,) * len(cls.RETURN_TYPES))
        outputs = []
        for i, output_type in enumerate(cls.RETURN_TYPES):
            if output_is_list[i]:
                values = [v for out in returned for v in out[i]]
            else:
                values = [out[i] for out in returned]
            for v in values:
                check_output_value(v, output_type, f"{where} output {i}")
            outputs.append(values)
        ui = {k: [item for u in uis for item in u.get(k, [])] for k in (uis[0] if uis else {})}
        run = NodeRun(nid, node["class_type"], "ran", outputs, ui, seconds=time.perf_counter() - started)
        results[nid] = run
        if on_node:
            on_node(run)
    return RunResult(dict(prompt), results)


# --- stand-ins for the ComfyUI core nodes the bundled workflows use --------------------------------------

def _image_files(folder: pathlib.Path) -> list[str]:
    exts = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)


def core_stand_ins(input_dir: pathlib.Path, output_dir: pathlib.Path) -> dict[str, type]:
    """Minimal versions of the core nodes: same ids, ``INPUT_TYPES`` (widget layout), ``RETURN_TYPES`` and
    output node flags as ComfyUI 0.33, enough behaviour for the bundled workflows.

    LoadImage lists and reads ``input_dir`` (ComfyUI's input folder); SaveImage / PreviewImage write PNGs to
    ``output_dir``; the checkpoint and sampling nodes carry ``SKIP_REASON`` and never run.
    """
    from PIL import Image

    input_dir = pathlib.Path(input_dir)
    output_dir = pathlib.Path(output_dir)

    class LoadImage:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"image": (_image_files(input_dir), {"image_upload": True})}}

        RETURN_TYPES = ("IMAGE", "MASK")
        FUNCTION = "load_image"

        def load_image(self, image):
            with Image.open(input_dir / image) as im:
                rgba = im.convert("RGBA") if "A" in im.getbands() else None
                rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
            pixels = torch.from_numpy(rgb)[None]
            if rgba is not None:
                mask = 1.0 - torch.from_numpy(np.asarray(rgba, dtype=np.float32)[..., 3] / 255.0)[None]
            else:
                mask = torch.zeros((1, 64, 64), dtype=torch.float32)
            return (pixels, mask)

    class SaveImage:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})},
                    "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "save_images"
        OUTPUT_NODE = True
        kind = "output"

        def save_images(self, images, filename_prefix="ComfyUI"):
            output_dir.mkdir(parents=True, exist_ok=True)
            saved = []
            for i, image in enumerate(images):
                name = f"{filename_prefix.replace('/', '_')}_{len(list(output_dir.iterdir())):05d}_{i}.png"
                arr = (image.clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)
                Image.fromarray(arr).save(output_dir / name)
                saved.append({"filename": name, "subfolder": "", "type": self.kind})
            return {"ui": {"images": saved}, "result": (images,)}

    class PreviewImage(SaveImage):
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"images": ("IMAGE",)},
                    "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

        kind = "temp"

        def save_images(self, images, filename_prefix="ComfyUI"):
            return super().save_images(images, "preview")

    class ImageBatch:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",)}}

        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "batch"

        def batch(self, image1, image2):
            if image1.shape[1:] != image2.shape[1:]:
                image2 = torch.nn.functional.interpolate(
                    image2.movedim(-1, 1), size=image1.shape[1:3], mode="bilinear", align_corners=False
                ).movedim(1, -1)
            return (torch.cat((image1, image2), dim=0),)

    class RepeatImageBatch:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"image": ("IMAGE",), "amount": ("INT", {"default": 1, "min": 1, "max": 4096})}}

        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "repeat"

        def repeat(self, image, amount):
            return (image.repeat((amount, 1, 1, 1)),)

    class MaskToImage:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"mask": ("MASK",)}}

        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "mask_to_image"

        def mask_to_image(self, mask):
            return (mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3),)

    class SaveAnimatedWEBP:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"}),
                                 "fps": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}),
                                 "lossless": ("BOOLEAN", {"default": True}),
                                 "quality": ("INT", {"default": 80, "min": 0, "max": 100}),
                                 "method": (["default", "fastest", "slowest"],)},
                    "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "save_images"
        OUTPUT_NODE = True

        def save_images(self, images, filename_prefix, fps, lossless, quality, method):
            output_dir.mkdir(parents=True, exist_ok=True)
            frames = [Image.fromarray((f.clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)) for f in images]
            name = f"{filename_prefix.replace('/', '_')}_{len(list(output_dir.iterdir())):05d}.webp"
            frames[0].save(output_dir / name, save_all=True, append_images=frames[1:], duration=round(1000 / fps),
                           lossless=lossless, quality=quality,
                           method={"default": 4, "fastest": 0, "slowest": 6}[method])
            return {"ui": {"images": [{"filename": name, "subfolder": "", "type": "output"}], "animated": (True,)},
                    "result": (images,)}

    checkpoint = "needs a checkpoint"

    class CheckpointLoaderSimple:
        SKIP_REASON = checkpoint
        RETURN_TYPES = ("MODEL", "CLIP", "VAE")
        FUNCTION = "load_checkpoint"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"ckpt_name": ("COMBO", {})}}  # the user's model list: any name

    class CLIPTextEncode:
        SKIP_REASON = checkpoint
        RETURN_TYPES = ("CONDITIONING",)
        FUNCTION = "encode"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"text": ("STRING", {"multiline": True, "dynamicPrompts": True}), "clip": ("CLIP",)}}

    class EmptyLatentImage:
        SKIP_REASON = checkpoint
        RETURN_TYPES = ("LATENT",)
        FUNCTION = "generate"

        @classmethod
        def INPUT_TYPES(cls):
            size = {"default": 512, "min": 16, "max": 16384, "step": 8}
            return {"required": {"width": ("INT", size), "height": ("INT", size),
                                 "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096})}}

    class KSampler:
        SKIP_REASON = checkpoint
        RETURN_TYPES = ("LATENT",)
        FUNCTION = "sample"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {
                "model": ("MODEL",),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
                "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
                "sampler_name": ("COMBO", {}),  # sampler/scheduler lists live in comfy.samplers: any name
                "scheduler": ("COMBO", {}),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "latent_image": ("LATENT",),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            }}

    class VAEDecode:
        SKIP_REASON = checkpoint
        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "decode"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"samples": ("LATENT",), "vae": ("VAE",)}}

    stand_ins = (LoadImage, SaveImage, PreviewImage, ImageBatch, RepeatImageBatch, MaskToImage, SaveAnimatedWEBP,
                 CheckpointLoaderSimple, CLIPTextEncode, EmptyLatentImage, KSampler, VAEDecode)
    return {cls.__name__: cls for cls in stand_ins}


def _unknown_if_empty(spec: tuple) -> tuple:
    """A combo whose list is empty on this server (no checkpoints installed...) accepts any value: the list
    is the user's, not the workflow's business."""
    if spec and isinstance(spec[0], (list, tuple)) and not spec[0]:
        return ("COMBO", dict(spec[1]) if len(spec) > 1 else {})
    if spec and spec[0] == "COMBO" and len(spec) > 1 and spec[1].get("options") == []:
        return ("COMBO", {k: v for k, v in spec[1].items() if k != "options"})
    return spec


def classes_from_object_info(object_info: Mapping[str, Mapping]) -> dict[str, type]:
    """Node classes for :func:`ui_to_api` / :class:`UIWorkflow` built from a real server's ``GET /object_info``
    (input specs in ``input_order``, output types and names, output-node flag). They translate and validate
    but cannot execute; ``tools/verify_in_comfyui.py`` uses them to check the bundled workflows against the
    definitions of the ComfyUI version at hand."""
    classes = {}
    for name, info in object_info.items():
        spec = {}
        for section in ("required", "optional"):
            entries = (info.get("input") or {}).get(section) or {}
            order = (info.get("input_order") or {}).get(section) or list(entries)
            spec[section] = {k: _unknown_if_empty(tuple(entries[k])) for k in order if k in entries}

        def input_types(cls, _spec=spec):
            return _spec

        outputs = tuple(info.get("output") or ())
        classes[name] = type(name, (), {
            "INPUT_TYPES": classmethod(input_types),
            "RETURN_TYPES": outputs,
            "RETURN_NAMES": tuple(info.get("output_name") or outputs),
            "OUTPUT_IS_LIST": tuple(info.get("output_is_list") or (False,) * len(outputs)),
            "OUTPUT_NODE": bool(info.get("output_node")),
            "FUNCTION": "not_executable_here",
        })
    return classes


# --- writing UI-format workflows ---------------------------------------------------------------------------

def default_widget_value(slot: WidgetSlot):
    """The value the frontend gives a fresh widget."""
    if slot.kind == "control":
        return "fixed"
    if slot.kind == "filter":
        return ""
    if slot.kind == "upload":
        return "image"
    if "default" in slot.options:
        return slot.options["default"]
    if is_combo_type(slot.input_type):
        allowed = combo_options(slot.input_type, slot.options) or [""]
        return allowed[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[slot.input_type]


@dataclasses.dataclass(frozen=True)
class Output:
    """A reference to output ``slot`` of node ``node_id`` (what :meth:`UIWorkflow.add` returns, indexed)."""

    node_id: int
    slot: int


class NodeHandle:
    def __init__(self, node_id: int, output_names: list[str]):
        self.id = node_id
        self._names = output_names

    def __getitem__(self, key: int | str) -> Output:
        return Output(self.id, key if isinstance(key, int) else self._names.index(key))


class UIWorkflow:
    """Builds a UI-format workflow (frontend 1.49 layout: every widget input also listed in ``inputs`` with
    ``"widget": {"name": ...}``) from node classes, so that ids, links and widget order are right by
    construction. Used by ``tools/make_workflows.py`` and by the tests' hand-made workflows.

    ``add(type, pos, widgets={name: value}, links={name: Output})``: widgets not given get the frontend's
    default; a link to a widget input is a "converted widget" (its saved value stays in widgets_values).
    """

    def __init__(self, node_classes: Mapping[str, type]):
        self.classes = node_classes
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.groups: list[dict] = []

    def _new_id(self) -> int:
        return len(self.nodes) + 1

    def add(self, node_type: str, pos, *, widgets: Mapping | None = None, links: Mapping | None = None,
            size=None, title: str | None = None, mode: int = MODE_NORMAL, color: str | None = None) -> NodeHandle:
        cls = self.classes[node_type]
        input_types = cls.INPUT_TYPES()
        widgets = dict(widgets or {})
        links = dict(links or {})
        layout = widget_layout(input_types)
        known = all_inputs(input_types)
        for name in list(widgets) + list(links):
            if name not in known:
                raise WorkflowError(f"{node_type} has no input {name!r} (inputs: {list(known)})")
        node_id = self._new_id()
        inputs = []
        for name, (section, input_type, options) in known.items():
            widget = is_widget_input(input_type, options)
            entry = {"localized_name": name, "name": name,
                     "type": "COMBO" if is_combo_type(input_type) else input_type, "link": None}
            if widget:
                entry["widget"] = {"name": name}
            if section == "optional":
                entry["shape"] = 7
            inputs.append(entry)
            if is_combo_type(input_type) and options.get("image_upload"):
                inputs.append({"localized_name": "choose file to upload", "name": "upload", "type": "IMAGEUPLOAD",
                               "widget": {"name": "upload"}, "link": None})
        names = list(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES)
        outputs = [{"localized_name": n, "name": n, "type": t, "links": []}
                   for n, t in zip(names, cls.RETURN_TYPES)]
        values = []
        for slot in layout:
            if slot.kind == "value" and slot.input_name in widgets:
                values.append(widgets[slot.input_name])
            else:
                values.append(default_widget_value(slot))
        node = {"id": node_id, "type": node_type, "pos": [float(pos[0]), float(pos[1])],
                "size": list(size) if size else [300.0, 60.0 + 26.0 * (len(inputs) + len(outputs))],
                "flags": {}, "order": len(self.nodes), "mode": mode, "inputs": inputs, "outputs": outputs,
                "properties": {"Node name for S&R": node_type}, "widgets_values": values}
        if title:
            node["title"] = title
        if color:
            node["color"] = color
        self.nodes.append(node)
        for name, source in links.items():
            self.connect(source, node_id, name)
        return NodeHandle(node_id, names)

    def connect(self, source: Output, target_id: int, input_name: str) -> int:
        origin = self.nodes[source.node_id - 1]
        target = self.nodes[target_id - 1]
        slot = next(i for i, e in enumerate(target["inputs"]) if e["name"] == input_name)
        link_id = len(self.links) + 1
        out_type = origin["outputs"][source.slot]["type"]
        origin["outputs"][source.slot]["links"].append(link_id)
        target["inputs"][slot]["link"] = link_id
        self.links.append([link_id, source.node_id, source.slot, target_id, slot, out_type])
        return link_id

    def primitive(self, value, targets: list[tuple[NodeHandle, str]], pos, *, title: str | None = None) -> int:
        """A PrimitiveNode driving the widget ``name`` of each (node, name) in ``targets`` (all of one type):
        the frontend copies its value into those widgets when queueing."""
        node_id = self._new_id()
        first, first_name = targets[0]
        target_type = self.nodes[first.id - 1]["type"]
        section, input_type, options = all_inputs(self.classes[target_type].INPUT_TYPES())[first_name]
        out_type = "COMBO" if is_combo_type(input_type) else input_type
        values = [value] + (["fixed"] if input_type in ("INT", "FLOAT") or is_combo_type(input_type) else [])
        if is_combo_type(input_type):
            values.append("")
        node = {"id": node_id, "type": PRIMITIVE_TYPE, "pos": [float(pos[0]), float(pos[1])], "size": [240.0, 82.0],
                "flags": {}, "order": len(self.nodes), "mode": MODE_NORMAL, "inputs": [],
                "outputs": [{"name": "connect to widget input", "type": out_type, "widget": {"name": first_name},
                             "links": []}],
                "title": title or first_name, "properties": {"Run widget replace on values": False},
                "widgets_values": values}
        self.nodes.append(node)
        for handle, name in targets:
            self.connect(Output(node_id, 0), handle.id, name)
        return node_id

    def note(self, text: str, pos, size=(420.0, 260.0), *, markdown: bool = True, title: str | None = None) -> int:
        node_id = self._new_id()
        node = {"id": node_id, "type": "MarkdownNote" if markdown else "Note", "pos": [float(pos[0]), float(pos[1])],
                "size": [float(size[0]), float(size[1])], "flags": {}, "order": len(self.nodes), "mode": MODE_NORMAL,
                "inputs": [], "outputs": [], "properties": {}, "widgets_values": [text],
                "color": "#432", "bgcolor": "#653"}
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node_id

    def group(self, title: str, bounding, color: str = "#3f789e") -> None:
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": [float(v) for v in bounding],
                            "color": color, "font_size": 24, "flags": {}})

    def to_json(self) -> dict:
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": self.groups, "config": {},
                "extra": {"ds": {"scale": 0.75, "offset": [560.0, 60.0]}}, "version": 0.4}


def run_workflow(workflow: Mapping | str | pathlib.Path, pack_nodes: Mapping[str, type], *,
                 input_dir: pathlib.Path, output_dir: pathlib.Path,
                 on_node: Callable[[NodeRun], None] | None = None) -> RunResult:
    """Load (if a path), translate and execute a UI-format workflow with the pack's node classes plus
    :func:`core_stand_ins`. Raises :class:`WorkflowError` on anything ComfyUI would refuse or fail on."""
    if not isinstance(workflow, Mapping):
        workflow = json.loads(pathlib.Path(workflow).read_text(encoding="utf-8"))
    classes = {**core_stand_ins(input_dir, output_dir), **pack_nodes}
    return execute_prompt(ui_to_api(workflow, classes), classes, on_node=on_node)


def _main(argv=None) -> int:
    import argparse
    import sys
    import tempfile

    root = pathlib.Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workflows", nargs="+", type=pathlib.Path)
    parser.add_argument("--input-dir", type=pathlib.Path, default=root / "workflows" / "inputs")
    parser.add_argument("--output-dir", type=pathlib.Path, default=None)
    parser.add_argument("--api", type=pathlib.Path, default=None, help="write the API-format prompt(s) here (a folder)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(root / "tools"))
    from pack_loader import import_pack  # the pack imported the way ComfyUI imports it

    pack = import_pack()
    failed = 0
    for path in args.workflows:
        out = args.output_dir or pathlib.Path(tempfile.mkdtemp(prefix="bokehme_wf_"))
        try:
            workflow = json.loads(path.read_text(encoding="utf-8"))
            classes = {**core_stand_ins(args.input_dir, out), **pack.NODE_CLASS_MAPPINGS}
            prompt = ui_to_api(workflow, classes)
            if args.api:
                args.api.mkdir(parents=True, exist_ok=True)
                clean = {k: {kk: vv for kk, vv in v.items() if kk != "_meta"} for k, v in prompt.items()}
                (args.api / path.name).write_text(json.dumps(clean, indent=1))
            result = execute_prompt(prompt, classes, on_node=lambda r: print(
                f"  {r.node_id:>3} {r.class_type:<28} {r.seconds:6.2f} s"))
            for nid, reason in result.skipped.items():
                print(f"  {nid:>3} {result.nodes[nid].class_type:<28} skipped: {reason}")
            print(f"PASS {path} (outputs in {out})")
        except WorkflowError as exc:
            failed += 1
            print(f"FAIL {path}: {exc}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(_main())
