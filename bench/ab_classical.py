"""Interleaved A/B of render_classical in ONE process: a base checkout vs this one (or another), bench_classical's
synthetic scene at 640x360, numba and torch backends, modes exact / fast / layered, plus lens cases. Median of N
alternating runs; the last column says whether the two outputs are bit-identical.

    git worktree add /tmp/base <commit>
    .venv/bin/python bench/ab_classical.py /tmp/base [NEW_TREE (default: this checkout)] [RUNS (default 5)]
"""
import pathlib, statistics, sys, time
import torch

torch.set_num_threads(2)
torch.set_grad_enabled(False)


HERE = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE / "bench"))
from bench_classical import load_checkout, synthetic_scene  # noqa: E402  (same in both trees)

base = load_checkout("base_core", pathlib.Path(sys.argv[1]))
new = load_checkout("new_core", pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else HERE)

W, H = 640, 360
image, disparity = synthetic_scene(H, W)
cases = []
for backend in ("numba", "torch"):
    for mode in ("exact", "fast", "layered"):
        if backend == "torch" and mode == "exact":
            continue
        cases.append((f"{mode}/{backend}/K30", dict(mode=mode, backend=backend), 30.0, None))
cases.append(("fast/numba/K30/cat+ring", dict(mode="fast", backend="numba"), 30.0, dict(cat_eye=0.8, ring=0.6)))
cases.append(("exact/numba/K30/cat+ring", dict(mode="exact", backend="numba"), 30.0, dict(cat_eye=0.8, ring=0.6)))


def call(core, opts, K, lens):
    defocus = core.signed_defocus(disparity, K, 0.5)
    kw = dict(opts, gamma=4.0)
    if lens:
        shape_cls = getattr(core.aperture, "LensShape", None) or core.aperture.Lens
        kw["lens"] = shape_cls(**lens)
    return core.render_classical(image, defocus, **kw).bokeh


runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
print("| case | base s | new s | new / base | identical |\n|---|---|---|---|---|")
for name, opts, K, lens in cases:
    a = call(base, opts, K, lens)  # warm-up (compiles / loads numba kernels)
    b = call(new, opts, K, lens)
    same = torch.equal(a, b)
    times = {"base": [], "new": []}
    for r in range(runs):
        order = (("base", base), ("new", new)) if r % 2 == 0 else (("new", new), ("base", base))
        for label, core in order:
            t = time.perf_counter()
            call(core, opts, K, lens)
            times[label].append(time.perf_counter() - t)
    mb, mn = statistics.median(times["base"]), statistics.median(times["new"])
    print(f"| {name} | {mb:.3f} | {mn:.3f} | {mn / mb:.3f} | {'yes' if same else 'NO'} |", flush=True)
