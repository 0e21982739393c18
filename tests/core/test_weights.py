"""bokehme_core.weights: reading (official .pth, plain state dict, safetensors), strict loading, bad files,
provenance and downloads, the bundled weights, and the download-weights CLI."""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import shutil
import socket
import threading

import pytest
import torch
from safetensors.torch import save_file

from bokehme_core import weights as W
from bokehme_core.neural.arnet import ARNet
from bokehme_core.neural.iunet import IUNet
from bokehme_core.weights import CheckpointError, load_arnet, load_iunet, read_state_dict, save_safetensors
from helpers import random_arnet_state



@pytest.fixture(scope="module")
def iunet_reference(official_checkpoints):
    from safetensors.torch import load_file

    return load_file(str(official_checkpoints / "iunet.safetensors"))


# ---- the three official IUNet forms -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["iunet.pth", "iunet_model_state_dict.pth", "iunet.safetensors"])
def test_load_official_iunet_forms(name, iunet_reference, official_checkpoints):
    net = load_iunet(official_checkpoints / name)
    assert isinstance(net, IUNet) and not net.training
    assert (net.config.middle_channels, net.config.num_blocks) == (64, 3)
    for k, v in net.state_dict().items():
        assert torch.equal(v, iunet_reference[k]), k


def test_official_pth_needs_only_the_numpy_allowlist(official_checkpoints):
    """Plain weights_only refuses the shipped file; our loader reads it without unrestricted pickle."""
    with pytest.raises(Exception, match="numpy"):
        torch.load(official_checkpoints / "iunet.pth", map_location="cpu", weights_only=True)
    state = read_state_dict(official_checkpoints / "iunet.pth")
    assert len(state) == 16 and all(isinstance(v, torch.Tensor) for v in state.values())


# ---- seed-0 ARNet converted in three forms ------------------------------------------------------------
@pytest.mark.parametrize("form", ["training_checkpoint", "state_dict", "safetensors"])
def test_load_arnet_forms(tmp_path, form):
    state = random_arnet_state()
    if form == "training_checkpoint":
        path = tmp_path / "arnet.pth"
        torch.save({"global_step": 3, "model": state, "optimizer": {"lr": 1e-4}}, path)
    elif form == "state_dict":
        path = tmp_path / "arnet_sd.pth"
        torch.save(state, path)
    else:
        path = tmp_path / "arnet.safetensors"
        save_file(state, str(path))
    net = load_arnet(path)
    assert isinstance(net, ARNet) and net.config.middle_channels == 128
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_small_variant_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = IUNet(middle_channels=16, num_blocks=2)
    save_safetensors(net, tmp_path / "small.safetensors", {"trained_by": "test"})
    loaded = load_iunet(tmp_path / "small.safetensors")
    assert (loaded.config.middle_channels, loaded.config.num_blocks) == (16, 2)
    x = torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 8), torch.rand(1, 3, 4, 4)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(*x, 0.5), net.eval()(*x, 0.5))


def test_load_to_device_argument(official_checkpoints):
    net = load_iunet(official_checkpoints / "iunet.safetensors", device="cpu")
    assert next(net.parameters()).device.type == "cpu"


# ---- wrong or broken files ----------------------------------------------------------------------------
def test_iunet_file_given_to_load_arnet(official_checkpoints):
    with pytest.raises(CheckpointError, match="conv0 takes 20 input channels.*use load_iunet"):
        load_arnet(official_checkpoints / "iunet.safetensors")


def test_arnet_file_given_to_load_iunet(tmp_path):
    save_file(random_arnet_state(), str(tmp_path / "a.safetensors"))
    with pytest.raises(CheckpointError, match="conv0 takes 17 input channels.*use load_arnet"):
        load_iunet(tmp_path / "a.safetensors")


def test_depth_model_rejected(tmp_path):
    state = {"pretrained.patch_embed.proj.weight": torch.zeros(8, 3, 4, 4), "head.bias": torch.zeros(1)}
    save_file(state, str(tmp_path / "depth.safetensors"))
    with pytest.raises(CheckpointError, match="not a BokehMe ARNet state dict.*pretrained.patch_embed"):
        load_arnet(tmp_path / "depth.safetensors")


def test_missing_and_unexpected_keys_named(tmp_path):
    state = random_arnet_state()
    del state["conv1.conv.bias"]
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys \['conv1.conv.bias'\]; unexpected keys \['extra.weight'\]"):
        load_arnet(tmp_path / "bad.safetensors")


def test_wrong_shape_named(tmp_path):
    state = random_arnet_state()
    state["conv1.conv.weight"] = torch.zeros(12, 128, 3, 3)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match=r"wrong shapes \['conv1.conv.weight \(12, 128, 3, 3\) \(expected \(16, 128, 3, 3\)\)'\]"):
        load_arnet(tmp_path / "bad.safetensors")


def test_nonfinite_weights_rejected(tmp_path):
    state = random_arnet_state()
    state["conv0.conv.bias"][0] = float("nan")
    save_file(state, str(tmp_path / "nan.safetensors"))
    with pytest.raises(CheckpointError, match="NaN/inf weights in \\['conv0.conv.bias'\\]"):
        load_arnet(tmp_path / "nan.safetensors")


@pytest.mark.parametrize("name", ["iunet.pth", "iunet.safetensors"])
def test_truncated_files(tmp_path, name, official_checkpoints):
    data = (official_checkpoints / name).read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_iunet(path)


def test_corrupted_zip_member(tmp_path, official_checkpoints):
    data = bytearray((official_checkpoints / "iunet_model_state_dict.pth").read_bytes())
    start = data.find(b"data.pkl") + 200  # scramble bytes inside the pickle
    data[start : start + 64] = b"\xff" * 64
    path = tmp_path / "scrambled.pth"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="cannot read"):
        load_iunet(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="not a torch.save zip archive"):
        load_iunet(path)


def test_non_tensor_objects_refused(tmp_path):
    path = tmp_path / "obj.pth"
    torch.save({"model": {"conv0.conv.weight": [1, 2, 3]}}, path)
    with pytest.raises(CheckpointError, match="not a state dict of tensors"):
        load_iunet(path)


def test_arbitrary_pickle_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "obj": argparse.Namespace(a=1)}, path)
    with pytest.raises(CheckpointError, match="not allowed in a weights file"):
        load_iunet(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="weights file not found: .*nope.pth"):
        load_arnet("/nonexistent/nope.pth")


# ---- download ----------------------------------------------------------------------------------------
def test_download_file_url_with_sha_and_progress(tmp_path, official_checkpoints):
    calls = []
    path = W.download_weights(
        "iunet", tmp_path / "dest", url=(official_checkpoints / "iunet.pth").as_uri(), progress=lambda d, t: calls.append((d, t))
    )
    assert path == tmp_path / "dest" / "iunet.pth"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == W.PROVENANCE["iunet"].sha256
    assert calls[-1][0] == path.stat().st_size and calls[0][0] == 0
    assert [p.name for p in (tmp_path / "dest").iterdir()] == ["iunet.pth"]  # no temp file left


def test_download_http_arnet(tmp_path, caplog):
    served = tmp_path / "served"
    served.mkdir()
    torch.save({"model": random_arnet_state()}, served / "arnet.pth")
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/arnet.pth"
        with caplog.at_level("INFO", logger="bokehme_core.weights"):
            path = W.download_weights("arnet", tmp_path / "dest", url=url)
    finally:
        server.shutdown()
        server.server_close()
    assert isinstance(load_arnet(path), ARNet)
    # the licence is logged, as a warning for the non-commercial official weights
    licence = [r for r in caplog.records if W.PROVENANCE["arnet"].licence in r.getMessage()]
    assert licence and licence[0].levelname == "WARNING" and "non-commercial" in licence[0].getMessage()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


def test_download_sha_mismatch_keeps_nothing(tmp_path, official_checkpoints):
    src = tmp_path / "iunet_sd.pth"
    shutil.copy(official_checkpoints / "iunet_model_state_dict.pth", src)
    with pytest.raises(W.WeightsDownloadError, match="expected 6df92779"):
        W.download_weights("iunet", tmp_path / "dest", url=src.as_uri())
    assert list((tmp_path / "dest").iterdir()) == []


def test_download_wrong_network_keeps_nothing(tmp_path, official_checkpoints):
    src = tmp_path / "arnet.pth"
    shutil.copy(official_checkpoints / "iunet_model_state_dict.pth", src)  # an IUNet under the ARNet name
    with pytest.raises(W.WeightsDownloadError, match="not a usable BokehMe ARNet.*use load_iunet"):
        W.download_weights("arnet", tmp_path / "dest", url=src.as_uri())
    assert list((tmp_path / "dest").iterdir()) == []


def test_download_offline_message(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(W.WeightsDownloadError) as info:
        W.download_weights("arnet", tmp_path, url=f"http://127.0.0.1:{port}/arnet.pth", timeout=5)
    message = str(info.value)
    assert "could not download" in message
    assert "https://github.com/JuewenPeng/BokehMe/raw/main/checkpoints/arnet.pth" in message
    assert str(tmp_path / "arnet.pth") in message


def test_download_bad_name(tmp_path):
    with pytest.raises(ValueError, match="name must be one of \\['arnet', 'iunet'\\], got 'depth_anything_v2_vits'"):
        W.download_weights("depth_anything_v2_vits", tmp_path, networks=("arnet", "iunet"))
    with pytest.raises(ValueError, match="name must be one of .*'arnet'.*'depth_anything_v2_vits'.*got 'depth'"):
        W.download_weights("depth", tmp_path)


# ---- CLI ---------------------------------------------------------------------------------------------
def test_cli_register_and_run(tmp_path, serve_official, capsys, official_checkpoints):
    from bokehme_core.cli import download_weights as cli_weights

    parser = argparse.ArgumentParser()
    cli_weights.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["download-weights", "--dest", str(tmp_path), "--which", "iunet"])
    assert args.which == ["iunet"] and args.dest == str(tmp_path)
    serve_official("iunet", (official_checkpoints / "iunet.pth").as_uri())
    assert args.func(args) == 0
    assert (tmp_path / "iunet.pth").is_file()
    assert "saved" in capsys.readouterr().err


def test_cli_default_dest_is_user_cache(tmp_path, monkeypatch, serve_official):
    from bokehme_core.cli import download_weights as cli_weights

    monkeypatch.setenv("BOKEHME_CACHE", str(tmp_path / "cache"))
    serve_official("iunet", (tmp_path / "missing.pth").as_uri())
    parser = argparse.ArgumentParser()
    cli_weights.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["download-weights", "--which", "iunet"])
    with pytest.raises(W.WeightsDownloadError, match=f"iunet: could not download .*save it as {tmp_path}/cache/iunet.pth"):
        args.func(args)  # the file:// source does not exist


def test_cli_through_main(tmp_path, serve_official, capsys, official_checkpoints):
    from bokehme_core import cli

    serve_official("iunet", (official_checkpoints / "iunet.pth").as_uri())
    assert cli.main(["download-weights", "--dest", str(tmp_path), "--which", "iunet"]) == 0
    assert (tmp_path / "iunet.pth").is_file()


# ---- bundled weights ----------------------------------------------------------------------------------
def test_missing_bundled_weights_message(tmp_path, monkeypatch):
    import bokehme_core.paths

    monkeypatch.setattr(bokehme_core.paths, "bundled_weights_dir", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="python -m bokehme_core download-weights.*arnet=load_arnet"):
        W.load_bundled_models()


def test_bundled_weights_loaded_and_cached(tmp_path, monkeypatch):
    import bokehme_core.paths
    from bokehme_core.weights import save_safetensors

    save_safetensors(ARNet(8, 1), tmp_path / "arnet.safetensors")
    save_safetensors(IUNet(64, 3), tmp_path / "iunet.safetensors")
    import hashlib
    import json

    sha = hashlib.sha256((tmp_path / "arnet.safetensors").read_bytes()).hexdigest()
    (tmp_path / "manifest.json").write_text(json.dumps({"arnet": {"file": "arnet.safetensors", "sha256": sha}}))
    monkeypatch.setattr(bokehme_core.paths, "bundled_weights_dir", lambda: tmp_path)
    reads = []
    real_read = W.read_state_dict
    monkeypatch.setattr(W, "read_state_dict", lambda path, **kw: reads.append(path) or real_read(path, **kw))
    arnet, iunet = W.load_bundled_models()
    assert arnet.config.middle_channels == 8 and iunet.config.middle_channels == 64
    # files are read once; every call hands out new modules, so moving one never touches another caller's
    again, _ = W.load_bundled_models()
    assert len(reads) == 2 and again is not arnet
    arnet.to(torch.float64)
    assert next(again.parameters()).dtype == torch.float32
    assert torch.equal(again.conv0.conv.weight, W.load_bundled_models()[0].conv0.conv.weight)
    # a damaged file is refused (a new manifest is re-checked)
    (tmp_path / "manifest.json").unlink()
    (tmp_path / "manifest.json").write_text(json.dumps({"arnet": {"file": "arnet.safetensors", "sha256": "0" * 64}}))
    with pytest.raises(ValueError, match="bundled weights .*arnet.safetensors are damaged: sha256"):
        W.load_bundled_models()


def test_shipped_bundled_weights_load():
    """The weights in the repository's weights/ folder match their manifest and load strictly."""
    import json

    import bokehme_core.paths

    arnet, iunet = W.load_bundled_models()
    manifest = json.loads((bokehme_core.paths.bundled_weights_dir() / "manifest.json").read_text())
    for net, name in ((arnet, "arnet"), (iunet, "iunet")):
        arch = manifest[name]["architecture"]
        assert (net.config.middle_channels, net.config.num_blocks) == (arch["middle_channels"], arch["num_blocks"])
        assert sum(p.numel() for p in net.parameters()) == arch["parameters"]
