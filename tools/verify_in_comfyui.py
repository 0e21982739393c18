#!/usr/bin/env python3
"""Check the pack in a real ComfyUI and its real web frontend (local only: CI cannot run ComfyUI).

Uses the shared launch helpers of ``../shared/tools/comfyui`` (``ComfyServer``: a throw-away base directory
with this pack linked into ``custom_nodes/``). For every bundled workflow (default ``workflows/*.json``):

1. translate it with the test harness (``tools/workflow_runner.ui_to_api``) using the *server's*
   ``/object_info`` -- so core-node widget layouts are checked against the ComfyUI version at hand;
2. load it in headless Chromium (``app.loadGraphData``), ask the frontend for its API prompt
   (``app.graphToPrompt``) and compare it input by input with the harness's translation;
3. queue it and wait for the result (skipped with ``--no-queue``; workflows needing a checkpoint fail there
   unless one is installed).

Then the click-to-focus check: a small graph LoadImage -> BokehMe Focus is run, a real mouse click is made on
the node's preview and the x / y / mode widgets are read back; a screenshot shows the marker.

Run with the ComfyUI venv's python (it has Playwright)::

    ~/comfy/venv/bin/python tools/verify_in_comfyui.py [WF.json ...] [--out DIR] [--no-queue] [--no-click]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import re
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_TOOLS = pathlib.Path(os.environ.get("BOKEHME_COMFY_TOOLS", ROOT.parent / "shared" / "tools" / "comfyui"))
sys.path.insert(0, str(SHARED_TOOLS))
sys.path.insert(0, str(ROOT / "tools"))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SETTINGS = {"Comfy.TutorialCompleted": True}


def compare_prompts(ours: dict, frontend: dict) -> list[str]:
    """Differences between the harness's API prompt and the frontend's (floats compared to 1e-6)."""
    diffs = []
    for nid in sorted(set(ours) | set(frontend), key=lambda s: int(s) if s.isdigit() else s):
        if nid not in frontend:
            diffs.append(f"node {nid} ({ours[nid]['class_type']}): only in the harness prompt")
            continue
        if nid not in ours:
            diffs.append(f"node {nid} ({frontend[nid]['class_type']}): only in the frontend prompt")
            continue
        a, b = ours[nid]["inputs"], frontend[nid]["inputs"]
        for name in sorted(set(a) | set(b)):
            va, vb = a.get(name, "<absent>"), b.get(name, "<absent>")
            same = va == vb or (isinstance(va, (int, float)) and isinstance(vb, (int, float))
                                and math.isclose(va, vb, rel_tol=1e-6, abs_tol=1e-9))
            if not same:
                diffs.append(f"node {nid} ({ours[nid]['class_type']}) input {name!r}: harness {va!r}, frontend {vb!r}")
    return diffs


def new_page(browser, server):
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
    ctx.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), lambda route: route.abort())
    page = ctx.new_page()
    errors = {"page": [], "console": [], "http": []}
    page.on("pageerror", lambda e: errors["page"].append(str(e)))
    page.on("response", lambda r: r.status >= 400 and errors["http"].append(f"{r.status} {r.url}"))
    page.on("requestfailed", lambda r: errors["http"].append(f"failed {r.url}"))
    page.on("console", lambda m: m.type == "error" and errors["console"].append(m.text[:300]))
    page.goto(server.url + "/", timeout=60000)
    page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=120000)
    return ctx, page, errors


def queue_and_wait(page, server, timeout):
    """Queue the loaded graph the way the Run button does and wait for its own history entry."""
    from comfy_run_workflow import describe_validation, wait_history

    responses = []

    def on_response(response):
        if response.request.method == "POST" and response.url.endswith("/api/prompt"):
            responses.append(response)

    page.on("response", on_response)
    try:
        page.evaluate("async () => await window.app.queuePrompt(0, 1)")
        for _ in range(100):
            if responses:
                break
            page.wait_for_timeout(100)
    finally:
        page.remove_listener("response", on_response)
    if not responses:
        return {"status": "not queued (no POST /api/prompt)"}
    body = responses[0].json()
    if responses[0].status != 200:
        return {"status": f"refused ({responses[0].status})", "error": describe_validation(body)}
    entry = wait_history(server, body["prompt_id"], timeout)
    if entry is None:
        return {"status": "timeout"}
    status = entry["status"].get("status_str")
    out = {"status": status, "outputs": sorted((entry.get("outputs") or {}).keys(), key=int)}
    msgs = {m[0]: m[1] for m in entry["status"].get("messages", [])}
    if "execution_start" in msgs and "execution_success" in msgs:
        elapsed_ms = msgs["execution_success"]["timestamp"] - msgs["execution_start"]["timestamp"]
        out["seconds"] = round(elapsed_ms / 1000, 1)
    if status != "success":
        err = msgs.get("execution_error") or {}
        out["error"] = f"node {err.get('node_id')} ({err.get('node_type')}) {err.get('exception_type')}: " \
                       f"{str(err.get('exception_message')).strip()[:400]}"
    return out


def check_workflow(browser, server, classes, path, args):
    import workflow_runner as wr

    report = {"workflow": str(path), "problems": []}
    workflow = json.loads(path.read_text())
    try:
        ours = wr.ui_to_api(workflow, classes)
        ours = {k: {kk: vv for kk, vv in v.items() if kk != "_meta"} for k, v in ours.items()}
        wr.validate_prompt(ours, classes)
    except wr.WorkflowError as exc:
        report["problems"].append(f"harness vs server definitions: {exc}")
        ours = None
    ctx, page, errors = new_page(browser, server)
    load = page.evaluate("""async ([wf, name]) => {
        const errors = [];
        try { await window.app.loadGraphData(wf, true, true, name); } catch (e) { errors.push(String(e)); }
        const missing = [...new Set(wf.nodes.map(n => n.type))].filter(t => !window.LiteGraph.registered_node_types[t]);
        return {errors, missing};
    }""", [workflow, path.stem])
    report.update(load)
    if load["missing"]:
        report["problems"].append(f"frontend lacks node types {load['missing']}")
    frontend = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    if ours is not None:
        theirs = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in frontend.items()}
        diffs = compare_prompts(ours, theirs)
        report["prompt_diffs"] = diffs
        report["problems"].extend(f"prompt differs: {d}" for d in diffs)
    if not args.no_queue:
        run = queue_and_wait(page, server, args.timeout)
        report["run"] = run
        if run["status"] != "success":
            report["problems"].append(f"run: {run}")
        time.sleep(1.0)
    page.screenshot(path=str(args.out / f"{path.stem}.png"))
    report.update(page_errors=errors["page"], console_errors=errors["console"], http_errors=errors["http"])
    if errors["page"]:
        report["problems"].append(f"JS page errors: {errors['page'][:2]}")
    ours = [e for e in errors["http"] if f"/extensions/{server_pack_name(server)}/" in e]
    if ours:
        report["problems"].append(f"the pack's web files failed to load: {ours}")
    ctx.close()
    return report


def server_pack_name(server) -> str:
    return pathlib.Path(server.packs[0]).name


CLICK_TARGET = (0.25, 0.7)

JS_PREVIEW_POINT = """([nodeId, u, v]) => {
    const node = window.app.graph.getNodeById(nodeId);
    const img = node.imgs && node.imgs[node.imageIndex ?? 0];
    const widget = (node.widgets || []).find(w => w.name === '$$canvas-image-preview');
    if (!img || !widget) return {ready: false, imgs: node.imgs ? node.imgs.length : 0, widget: !!widget};
    // The frontend's own layout of a single preview (independent of our extension's code):
    const sizeText = window.app.extensionManager.setting.get('Comfy.Node.AllowImageSizeDraw') ? 15 : 0;
    const W = node.size[0], H = widget.computedHeight - sizeText;
    const s = Math.min(W / img.naturalWidth, H / img.naturalHeight, 1);
    const w = img.naturalWidth * s, h = img.naturalHeight * s;
    const x0 = (W - w) / 2, y0 = widget.y + (H - h) / 2;
    const canvasPoint = [node.pos[0] + x0 + u * w, node.pos[1] + y0 + v * h];
    const offset = window.app.canvas.ds.convertOffsetToCanvas(canvasPoint);
    const box = window.app.canvas.canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    return {ready: true, x: box.left + offset[0] / dpr, y: box.top + offset[1] / dpr,
            natural: [img.naturalWidth, img.naturalHeight], rect: [x0, y0, w, h]};
}"""

JS_WIDGETS = """(nodeId) => {
    const node = window.app.graph.getNodeById(nodeId);
    const get = n => (node.widgets.find(w => w.name === n) || {}).value;
    return {x: get('x'), y: get('y'), mode: get('mode'), focusLabel: node.bokehmeFocusValue ?? null};
}"""


def check_click_to_focus(browser, server, classes, args):
    """Run LoadImage -> BokehMe Focus, click on the preview, read the widgets back."""
    import workflow_runner as wr

    report = {"workflow": "click-to-focus", "problems": []}
    wf = wr.UIWorkflow(classes)
    load = wf.add("LoadImage", (40, 60), widgets={"image": "example.png"}, size=(300, 380))
    wf.add("BokehMeFocus", (380, 60), widgets={"mode": "value", "focus": 0.5, "x": 0.5, "y": 0.5},
           links={"disparity": load["IMAGE"], "image": load["IMAGE"]}, size=(420, 560))
    workflow = wf.to_json()
    workflow["extra"]["ds"] = {"scale": 1.0, "offset": [0.0, 0.0]}
    ctx, page, errors = new_page(browser, server)
    page.evaluate("async (wf) => await window.app.loadGraphData(wf, true, true, 'click')", workflow)
    run = queue_and_wait(page, server, args.timeout)
    report["run"] = run
    if run["status"] != "success":
        report["problems"].append(f"run failed: {run}")
    point = None
    for _ in range(50):  # the preview arrives over the websocket, then the canvas redraws
        page.evaluate("() => window.app.canvas.setDirty(true, true)")
        page.wait_for_timeout(200)
        point = page.evaluate(JS_PREVIEW_POINT, [2, *CLICK_TARGET])
        if point.get("ready"):
            break
    report["preview"] = point
    if not point or not point.get("ready"):
        report["problems"].append(f"no preview image on the focus node: {point}")
    else:
        before = page.evaluate(JS_WIDGETS, 2)
        page.mouse.click(point["x"], point["y"])
        page.wait_for_timeout(300)
        after = page.evaluate(JS_WIDGETS, 2)
        report["widgets_before"], report["widgets_after"] = before, after
        ok = (after["mode"] == "point" and abs(after["x"] - CLICK_TARGET[0]) <= 0.01
              and abs(after["y"] - CLICK_TARGET[1]) <= 0.01)
        if not ok:
            report["problems"].append(f"click at {CLICK_TARGET} gave widgets {after}")
        # the next run uses the clicked point
        frontend = page.evaluate("async () => (await window.app.graphToPrompt()).output")
        report["prompt_after_click"] = frontend.get("2", {}).get("inputs")
        # a drag on the preview still moves the node
        pos0 = page.evaluate("() => [...window.app.graph.getNodeById(2).pos]")
        page.mouse.move(point["x"], point["y"])
        page.mouse.down()
        page.mouse.move(point["x"] + 60, point["y"] + 30, steps=6)
        page.mouse.up()
        page.wait_for_timeout(200)
        pos1 = page.evaluate("() => [...window.app.graph.getNodeById(2).pos]")
        after_drag = page.evaluate(JS_WIDGETS, 2)
        report["drag"] = {"pos_before": pos0, "pos_after": pos1, "widgets_after_drag": after_drag}
        if after_drag["x"] != after["x"] or after_drag["y"] != after["y"]:
            report["problems"].append(f"a drag changed the focus point: {after} -> {after_drag}")
        page.evaluate("() => { window.app.canvas.deselectAll(); window.app.canvas.setDirty(true, true); }")
        page.wait_for_timeout(500)
    page.screenshot(path=str(args.out / "click_to_focus.png"))
    report.update(page_errors=errors["page"], console_errors=errors["console"], http_errors=errors["http"])
    if errors["page"]:
        report["problems"].append(f"JS page errors: {errors['page'][:2]}")
    ctx.close()
    return report


def main(argv=None) -> int:
    from playwright.sync_api import sync_playwright

    from comfy_run_workflow import DEFAULT_COMFY, DEFAULT_PYTHON, ComfyServer, http_json
    import workflow_runner as wr

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workflows", nargs="*", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("/tmp/bokehme_verify"))
    parser.add_argument("--no-queue", action="store_true")
    parser.add_argument("--no-click", action="store_true")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--comfy", default=DEFAULT_COMFY)
    parser.add_argument("--python", default=DEFAULT_PYTHON)
    parser.add_argument("--pack", type=pathlib.Path, default=ROOT,
                        help="the pack folder to link into custom_nodes (default: this checkout); its folder name "
                             "is the template-browser category")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    workflows = args.workflows or sorted((args.pack / "workflows").glob("*.json"))

    server = ComfyServer(args.comfy, args.python, [str(args.pack)], extra_args=[], settings=SETTINGS)
    server.start()
    reports = []
    try:
        import shutil

        shutil.copy(pathlib.Path(args.comfy) / "input" / "example.png", server.dir("input"))
        _, info = http_json("GET", server.url + "/object_info")
        classes = wr.classes_from_object_info(info)
        _, stats = http_json("GET", server.url + "/system_stats")
        versions = {"comfyui": stats.get("system", {}).get("comfyui_version"),
                    "frontend": _frontend_version(args.python)}
        print(f"ComfyUI {versions['comfyui']}, frontend {versions['frontend']}, up in {server.startup_s:.1f} s; "
              f"BokehMe nodes: {sorted(k for k in info if k.startswith('BokehMe'))}")
        # the template browser: the pack's folder name -> workflow names, thumbnails served beside them
        _, templates = http_json("GET", server.url + "/workflow_templates")
        listed = templates.get(args.pack.name, []) if isinstance(templates, dict) else []
        thumbs = {name: http_json("GET", f"{server.url}/api/workflow_templates/{args.pack.name}/{name}.jpg")[0]
                  for name in listed}
        help_status = http_json("GET", f"{server.url}/extensions/{args.pack.name}/docs/BokehMe.md")[0]
        print(f"template browser '{args.pack.name}': {sorted(listed)}; thumbnail HTTP status {thumbs}; "
              f"help page HTTP {help_status}")
        bundled = sorted(p.stem for p in (args.pack / "workflows").glob("*.json"))
        served = sorted(listed) == bundled and set(thumbs.values()) == {200} and help_status == 200
        template_problems = [] if served else [f"templates {listed}, thumbs {thumbs}, help {help_status}"]
        reports.append({"workflow": "template browser + help page", "problems": template_problems})
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            for path in workflows:
                reports.append(check_workflow(browser, server, classes, path, args))
            if not args.no_click:
                reports.append(check_click_to_focus(browser, server, classes, args))
            browser.close()
    finally:
        server.stop()
    failed = 0
    for r in reports:
        status = "FAIL" if r["problems"] else "ok"
        failed += bool(r["problems"])
        print(f"[{status}] {r['workflow']}  run={r.get('run', {}).get('status', '-')} "
              f"({r.get('run', {}).get('seconds', '-')} s)")
        for problem in r["problems"]:
            print(f"    {problem}")
        if r["workflow"] == "click-to-focus" and "widgets_after" in r:
            print(f"    widgets before {r['widgets_before']} after click {r['widgets_after']}; drag {r['drag']}")
    (args.out / "report.json").write_text(json.dumps({"versions": versions, "reports": reports}, indent=1, default=str))
    print(f"{len(reports) - failed} ok, {failed} failed; screenshots and report.json in {args.out}; "
          f"server log {server.log_path}")
    return 1 if failed else 0


def _frontend_version(python: str) -> str:
    import subprocess

    code = "import importlib.metadata as m; print(m.version('comfyui-frontend-package'))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    raise SystemExit(main())
