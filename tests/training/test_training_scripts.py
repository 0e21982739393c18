"""The training scripts end to end on a tiny data set: data generation, ARNet, IUNet with a frozen ARNet,
resuming, determinism and export. Subprocesses, as a user runs them (README: one command per stage)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
TRAINING = ROOT / "training"


def _run(script: str, *args, cwd=ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run(
        [sys.executable, str(TRAINING / script), *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _step(path: pathlib.Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["step"])


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("data")
    _run("make_dataset.py", "--out", out, "--shards", 1, "--scenes-per-shard", 2, "--size", 40)
    return out


def test_make_dataset_writes_a_well_formed_shard(tiny_data):
    (shard,) = sorted(tiny_data.glob("shard_*.npz"))
    with np.load(shard) as z:
        assert z["image"].shape == (4, 3, 40, 40)  # 2 scenes x 2 renders
        assert z["disparity"].shape == z["dilated_px"].shape == z["error_target"].shape == (4, 1, 40, 40)
        for key in ("image", "disparity", "gt", "classical", "classical_layered", "classical_layered_recovered",
                    "error_target"):
            values = z[key].astype(np.float32)
            assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1, key
        # highlight recovery only lifts (clipped, blurred lights), never darkens
        assert (z["recovered"].astype(np.float32) >= z["image"].astype(np.float32) - 1e-3).all()
        K, focus, gamma = z["params"].T
        assert ((K >= 4) & (K <= 13)).all() and ((focus >= 0.05) & (focus <= 1)).all()
        assert ((gamma >= 1) & (gamma <= 5)).all()


def test_make_dataset_is_deterministic_and_resumes_an_interrupted_run(tiny_data, tmp_path):
    # An interrupted run: shard 0 written, shard 1 cut off while it was being written (its temporary file left).
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy2(tiny_data / "shard_00000.npz", resumed / "shard_00000.npz")
    (resumed / "shard_00001.tmp.npz").write_bytes(b"partial zip")
    first_mtime = (resumed / "shard_00000.npz").stat().st_mtime_ns
    _run("make_dataset.py", "--out", resumed, "--shards", 2, "--scenes-per-shard", 2, "--size", 40)
    fresh = tmp_path / "fresh"
    _run("make_dataset.py", "--out", fresh, "--shards", 2, "--scenes-per-shard", 2, "--size", 40)
    names = ["shard_00000.npz", "shard_00001.npz"]
    # no duplicate, none missing, no temporary file left; the finished shard was not redone
    assert sorted(p.name for p in resumed.iterdir()) == names == sorted(p.name for p in fresh.iterdir())
    assert (resumed / "shard_00000.npz").stat().st_mtime_ns == first_mtime
    for name in names:  # same seeds -> the same bytes, whether resumed or not, in another process
        assert (resumed / name).read_bytes() == (fresh / name).read_bytes(), name
    assert (tiny_data / names[0]).read_bytes() == (fresh / names[0]).read_bytes()
    with np.load(fresh / names[1]) as z:
        assert z["gt"].shape == (4, 3, 40, 40) and z["gt"].dtype == np.float16
    # two processes splitting the shards: worker 1 of 2 writes shard 1 only, the same bytes as one process
    split = tmp_path / "split"
    _run("make_dataset.py", "--out", split, "--shards", 2, "--scenes-per-shard", 2, "--size", 40,
         "--workers", 2, "--worker", 1)
    assert sorted(p.name for p in split.iterdir()) == names[1:]
    assert (split / names[1]).read_bytes() == (fresh / names[1]).read_bytes()


def test_make_dataset_rejects_a_worker_outside_the_workers(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(TRAINING / "make_dataset.py"), "--out", str(tmp_path), "--workers",
                             "2", "--worker", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--worker must be in 0 .. --workers - 1" in result.stderr
    assert not any(tmp_path.iterdir())


def test_arnet_then_iunet_with_frozen_arnet_resume_and_export(tiny_data, tmp_path):
    from bokehme_core.weights import load_arnet, load_iunet

    common = ["--data", tiny_data, "--val-data", tmp_path / "none", "--batch", 2, "--crop", 32,
              "--log-every", 1, "--ckpt-every", 1, "--width", 8]
    arnet_run, iunet_run = tmp_path / "arnet", tmp_path / "iunet"
    _run("train_arnet.py", *common, "--run", arnet_run, "--steps", 2)
    assert _step(arnet_run / "latest.pt") == 2
    _run("train_arnet.py", *common, "--run", arnet_run, "--steps", 3)  # resumes: one more step
    assert _step(arnet_run / "latest.pt") == 3
    log = (arnet_run / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,") and [row.split(",")[0] for row in log[1:]] == ["1", "2", "3"]

    iunet_args = [*common, "--coarse", "arnet", "--arnet", arnet_run / "latest.pt"]
    result = _run("train_iunet.py", *iunet_args, "--run", iunet_run, "--steps", 2)
    assert "frozen ARNet" in result.stderr and "(step 3)" in result.stderr
    assert _step(iunet_run / "latest.pt") == 2
    header = (iunet_run / "log.csv").read_text().splitlines()[0].split(",")
    assert "arnet_step" in header

    # determinism: the same command in a fresh run folder gives the same weights
    again = tmp_path / "iunet_again"
    _run("train_iunet.py", *iunet_args, "--run", again, "--steps", 2)
    a = torch.load(iunet_run / "latest.pt", weights_only=True)["model"]
    b = torch.load(again / "latest.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    out = tmp_path / "weights"
    _run("export_weights.py", "--arnet-run", arnet_run, "--iunet-run", iunet_run, "--out", out)
    assert load_arnet(out / "arnet.safetensors").conv0.conv.weight.shape[0] == 8
    assert load_iunet(out / "iunet.safetensors").conv0.conv.weight.shape[0] == 8


def test_zero_blur_turns_samples_into_sharp_identities():
    import random

    common = _common()
    generator = torch.Generator().manual_seed(0)
    batch = {key: torch.rand(64, c, 8, 8, generator=generator) for key, c in
             (("image", 3), ("gt", 3), ("classical", 3), ("dilated_px", 1), ("error_target", 1), ("disparity", 1))}
    batch["params"] = torch.tensor([[10.0, 0.5, 2.2]]).repeat(64, 1)
    before = {k: v.clone() for k, v in batch.items()}
    common.zero_blur(batch, random.Random(3), 0.25)
    zeroed = batch["params"][:, 0] == 0
    assert 5 <= int(zeroed.sum()) <= 30  # about a quarter of 64
    assert torch.equal(batch["gt"][zeroed], batch["image"][zeroed])
    assert torch.equal(batch["classical"][zeroed], batch["image"][zeroed])
    assert not batch["dilated_px"][zeroed].any() and not batch["error_target"][zeroed].any()
    _, defocus, _ = common.network_inputs(batch)
    assert not defocus[zeroed].any()
    for key in before:  # the other samples are untouched
        assert torch.equal(batch[key][~zeroed], before[key][~zeroed]), key


def _common():
    import importlib.util

    spec = importlib.util.spec_from_file_location("training_common", TRAINING / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pick_device():
    common = _common()
    assert common.pick_device("cpu") == torch.device("cpu")
    assert common.pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(SystemExit, match="--device must be auto, cpu or cuda"):
        common.pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA GPU .* use --device cpu or auto"):
            common.pick_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_runs_on_cuda(tiny_data, tmp_path):
    common = ["--data", tiny_data, "--val-data", tmp_path / "none", "--batch", 2, "--crop", 32,
              "--width", 8, "--device", "cuda", "--steps", 2]
    _run("train_arnet.py", *common, "--run", tmp_path / "arnet")
    _run("train_iunet.py", *common, "--run", tmp_path / "iunet", "--coarse", "arnet",
         "--arnet", tmp_path / "arnet" / "latest.pt")
    assert _step(tmp_path / "iunet" / "latest.pt") == 2


def test_distill_iunet_runs_resumes_and_loads(tmp_path):
    """The narrow-IUNet distillation: trains, resumes where it stopped, and its weights load strictly."""
    run = tmp_path / "distill"
    args = ("--run", run, "--width", 8, "--scenes", 6, "--samples", 6, "--val-scenes", 8, "--batch", 2,
            "--log-every", 2, "--val-every", 2, "--ckpt-every", 2, "--device", "cpu")
    _run("distill_iunet.py", *args, "--steps", 2)
    assert _step(run / "latest.pt") == 2
    _run("distill_iunet.py", *args, "--steps", 4)
    assert _step(run / "latest.pt") == 4
    rows = (run / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and "val_psnr_vs_teacher" in rows[0] and len(rows) == 3
    from bokehme_core.neural.iunet import IUNet

    state = torch.load(run / "latest.pt", map_location="cpu", weights_only=True)
    student = IUNet(8)
    student.load_state_dict(state["model"], strict=True)
    assert all(torch.isfinite(p).all() for p in student.parameters())


@pytest.mark.parametrize("classical, extra", [("layered", []), ("layered_recovered", ["--gate"])])
def test_arnet_against_the_layered_classical_render(tiny_data, tmp_path, classical, extra):
    """--classical layered trains the fusion against the shards' layered render, layered_recovered against the
    default pipeline's (layered + highlight recovery; with --gate fused through the pipeline's gate)."""
    run = tmp_path / "arnet_layered"
    _run("train_arnet.py", "--data", tiny_data, "--val-data", tiny_data, "--width", 8, "--batch", 2, "--crop", 32,
         "--log-every", 1, "--val-every", 1, "--ckpt-every", 1, "--device", "cpu", "--classical", classical,
         "--run", run, "--steps", 2, *extra)
    assert _step(run / "latest.pt") == 2
    with np.load(next(tiny_data.glob("shard_*.npz"))) as shard:
        assert {"classical_layered", "classical_layered_recovered", "recovered"} <= set(shard.files)


def test_layered_recovered_is_the_default_pipelines_input_and_render():
    """The shard's recovered image and classical render are exactly what render_bokehme's defaults compute."""
    import sys

    import bokehme_core as bm
    from bokehme_core.defocus import render_inputs

    sys.path.insert(0, str(TRAINING))
    try:
        import make_dataset
    finally:
        sys.path.remove(str(TRAINING))
    from bokehme_core.synth.scene import augment_disparity, make_scene, sample_render_params

    sample = make_dataset.make_sample(4, 0, 32)
    # the same draws as make_sample, in float32 (the shard holds float16)
    scene = make_scene(32, 32, 4, hdr_lights=make_dataset.HDR_LIGHTS)
    rng = np.random.default_rng([4, 0, 12345])
    params = sample_render_params(rng, tuple(make_dataset.RECIPE["K_range"]))
    disparity = augment_disparity(scene.disparity, rng, predicted_share=make_dataset.PREDICTED_SHARE)
    recovered, defocus = render_inputs(scene.image, disparity, params.K, params.focus, recover=True)
    classical = bm.render_classical(recovered, defocus, gamma=params.gamma, mode="layered").bokeh.clamp(0, 1)
    assert float((recovered - scene.image).max()) > 0.05  # this scene has clipped lights that get lifted
    for key, expected in (("recovered", recovered), ("classical_layered_recovered", classical)):
        torch.testing.assert_close(torch.from_numpy(sample[key].astype(np.float32))[None], expected,
                                   atol=1e-3, rtol=1e-3)


def test_arnet_fusion_gate_is_the_pipelines():
    """losses(gate=...) fuses with E * gate: a zero gate gives the classical render, and the gate is the
    pipeline's error_gate of the layered renderer."""
    import sys

    from bokehme_core.error_map import error_gate
    from bokehme_core.neural.arnet import ARNet

    sys.path.insert(0, str(TRAINING))
    try:
        import train_arnet
    finally:
        sys.path.remove(str(TRAINING))
    generator = torch.Generator().manual_seed(2)
    batch = {key: torch.rand(2, c, 24, 24, generator=generator) for key, c in
             (("image", 3), ("gt", 3), ("classical", 3), ("error_target", 1), ("disparity", 1))}
    batch["params"] = torch.tensor([[9.0, 0.2, 2.2], [6.0, 0.8, 1.5]])
    model = ARNet(middle_channels=8).eval()
    with torch.no_grad():
        _, _, fused, _ = train_arnet.losses(model, batch, gate=torch.zeros(2, 1, 24, 24))
        torch.testing.assert_close(fused, batch["classical"])
        gate = train_arnet.fusion_gate(batch, "layered_recovered", True)
        expected = error_gate(train_arnet.defocus_px(batch), "layered")
        torch.testing.assert_close(gate, expected)
        assert train_arnet.fusion_gate(batch, "layered", False) is None
        assert train_arnet.fusion_gate(batch, "exact", True) is None  # the exact renderer has no gate


def test_select_layered_recovered_and_zero_blur_use_the_plain_image():
    import random

    common = _common()
    generator = torch.Generator().manual_seed(1)
    batch = {key: torch.rand(32, c, 8, 8, generator=generator) for key, c in
             (("image", 3), ("recovered", 3), ("gt", 3), ("classical", 3), ("classical_layered", 3),
              ("classical_layered_recovered", 3), ("dilated_px", 1), ("error_target", 1), ("disparity", 1))}
    batch["params"] = torch.tensor([[10.0, 0.5, 2.2]]).repeat(32, 1)
    plain, recovered = batch["image"].clone(), batch["recovered"].clone()
    common.select_classical(batch, "layered_recovered")
    assert batch["classical"] is batch["classical_layered_recovered"] and torch.equal(batch["image"], recovered)
    common.zero_blur(batch, random.Random(0), 0.5)
    zeroed = batch["params"][:, 0] == 0
    assert 0 < int(zeroed.sum()) < 32
    for key in ("image", "gt", "classical"):  # K = 0: no recovery (sharp lights stay as photographed)
        assert torch.equal(batch[key][zeroed], plain[zeroed]), key
    assert torch.equal(batch["image"][~zeroed], recovered[~zeroed])
    with pytest.raises(SystemExit, match="needs shards with 'recovered'"):
        common.select_classical({"image": plain, "classical_layered_recovered": plain}, "layered_recovered")
