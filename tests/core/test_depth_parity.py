"""Parity of our depth networks with independent re-derivations of the official forward passes.

We cannot run the official code here, so each reference below is written straight from the official model code
(DepthAnything/Depth-Anything-V2 ``dpt.py`` + ``dinov2.py``; isl-org/MiDaS ``dpt_depth.py`` + ``backbones/``)
and consumes the *official* state dict directly:

* DA-V2: a plain functional forward (conv2d / layer_norm / explicit softmax attention / conv_transpose2d),
  including the official position-embedding interpolation with its quirks;
* MiDaS DPT-Hybrid: the official module tree (timm model + forward hooks on the ResNet stages and ViT blocks,
  ``act_postprocess`` Sequentials with the official indices, ``scratch``), loaded strictly from the official
  keys, run through a transcription of ``forward_flex`` / ``forward_adapted_unflatten``.

Tolerance: relative 1e-5 of the output's maximum (float32 noise).
"""

from __future__ import annotations

from helpers import random_official_depth_weights

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from bokehme_core.depth import build_model, model_from_state_dict, to_official_state_dict

REL_TOL = 1e-5


def _check_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape
    assert (ref > 0).float().mean() > 0.2, "reference output is (almost) all zero: the comparison would be vacuous"
    scale = ref.abs().max()
    err = (ours - ref).abs().max()
    assert err <= REL_TOL * scale, f"max abs error {err:.3g} > {REL_TOL} * {scale:.3g}"


# --- Depth Anything V2: functional reference ---------------------------------------------------------------

def _ref_interpolate_pos(sd, n_patches, height, width):
    # dinov2.interpolate_pos_encoding(x, w, h) is called with w = x.shape[2] (rows), h = x.shape[3]
    pos = sd["pretrained.pos_embed"]
    N = pos.shape[1] - 1
    w, h = height, width
    if n_patches == N and w == h:
        return pos
    dim = pos.shape[-1]
    w0, h0 = w // 14 + 0.1, h // 14 + 0.1
    sqrt_n = math.sqrt(N)
    grid = pos[:, 1:].reshape(1, int(sqrt_n), int(sqrt_n), dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=(w0 / sqrt_n, h0 / sqrt_n), mode="bicubic", antialias=False)
    assert int(w0) == grid.shape[-2] and int(h0) == grid.shape[-1]
    grid = grid.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((pos[:, 0].unsqueeze(0), grid), dim=1)


def _ref_block(sd, p, x, heads):
    dim = x.shape[-1]
    y = F.layer_norm(x, (dim,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
    qkv = F.linear(y, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
    B, N, _ = qkv.shape
    qkv = qkv.reshape(B, N, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * (dim // heads) ** -0.5, qkv[1], qkv[2]
    attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
    y = (attn @ v).transpose(1, 2).reshape(B, N, dim)
    y = F.linear(y, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
    x = x + sd[p + "ls1.gamma"] * y
    y = F.layer_norm(x, (dim,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
    y = F.gelu(F.linear(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
    y = F.linear(y, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    return x + sd[p + "ls2.gamma"] * y


def _ref_rcu(sd, p, x):
    out = F.conv2d(F.relu(x), sd[p + "conv1.weight"], sd[p + "conv1.bias"], padding=1)
    out = F.conv2d(F.relu(out), sd[p + "conv2.weight"], sd[p + "conv2.bias"], padding=1)
    return out + x


def _ref_fusion(sd, p, *xs, size=None):
    out = xs[0]
    if len(xs) == 2:
        out = out + _ref_rcu(sd, p + "resConfUnit1.", xs[1])
    out = _ref_rcu(sd, p + "resConfUnit2.", out)
    mod = {"scale_factor": 2} if size is None else {"size": size}
    out = F.interpolate(out, **mod, mode="bilinear", align_corners=True)
    return F.conv2d(out, sd[p + "out_conv.weight"], sd[p + "out_conv.bias"])


def _ref_scratch(sd, p, layers):
    rn = [F.conv2d(x, sd[f"{p}layer{i + 1}_rn.weight"], padding=1) for i, x in enumerate(layers)]
    path4 = _ref_fusion(sd, p + "refinenet4.", rn[3], size=rn[2].shape[2:])
    path3 = _ref_fusion(sd, p + "refinenet3.", path4, rn[2], size=rn[1].shape[2:])
    path2 = _ref_fusion(sd, p + "refinenet2.", path3, rn[1], size=rn[0].shape[2:])
    return _ref_fusion(sd, p + "refinenet1.", path2, rn[0])


def reference_da_v2(sd: dict, x: torch.Tensor, layers=(2, 5, 8, 11), heads=6) -> torch.Tensor:
    """Depth Anything V2 forward from the official state dict (vits defaults)."""
    B, _, H, W = x.shape
    ph, pw = H // 14, W // 14
    t = F.conv2d(x, sd["pretrained.patch_embed.proj.weight"], sd["pretrained.patch_embed.proj.bias"], stride=14)
    t = t.flatten(2).transpose(1, 2)
    t = torch.cat((sd["pretrained.cls_token"].expand(B, -1, -1), t), dim=1)
    t = t + _ref_interpolate_pos(sd, t.shape[1] - 1, H, W)
    dim = t.shape[-1]
    feats = []
    for i in range(12):
        t = _ref_block(sd, f"pretrained.blocks.{i}.", t, heads)
        if i in layers:
            feats.append(F.layer_norm(t, (dim,), sd["pretrained.norm.weight"], sd["pretrained.norm.bias"], eps=1e-6))
    hp = "depth_head."
    out = []
    for i, f in enumerate(feats):
        m = f[:, 1:].permute(0, 2, 1).reshape(B, dim, ph, pw)
        m = F.conv2d(m, sd[f"{hp}projects.{i}.weight"], sd[f"{hp}projects.{i}.bias"])
        if i == 0:
            m = F.conv_transpose2d(m, sd[hp + "resize_layers.0.weight"], sd[hp + "resize_layers.0.bias"], stride=4)
        elif i == 1:
            m = F.conv_transpose2d(m, sd[hp + "resize_layers.1.weight"], sd[hp + "resize_layers.1.bias"], stride=2)
        elif i == 3:
            m = F.conv2d(m, sd[hp + "resize_layers.3.weight"], sd[hp + "resize_layers.3.bias"], stride=2, padding=1)
        out.append(m)
    path1 = _ref_scratch(sd, hp + "scratch.", out)
    y = F.conv2d(path1, sd[hp + "scratch.output_conv1.weight"], sd[hp + "scratch.output_conv1.bias"], padding=1)
    y = F.interpolate(y, (ph * 14, pw * 14), mode="bilinear", align_corners=True)
    y = F.relu(F.conv2d(y, sd[hp + "scratch.output_conv2.0.weight"], sd[hp + "scratch.output_conv2.0.bias"], padding=1))
    y = F.relu(F.conv2d(y, sd[hp + "scratch.output_conv2.2.weight"], sd[hp + "scratch.output_conv2.2.bias"]))
    return F.relu(y).squeeze(1)


@pytest.fixture(scope="module")
def da_v2_vits():
    sd = random_official_depth_weights("depth_anything_v2", "vits", seed=1)
    return sd, model_from_state_dict(sd, "random vits")


@pytest.mark.parametrize("size", [(28, 42), (42, 14), (70, 56)])
def test_da_v2_matches_reference_interpolated_positions(da_v2_vits, size):
    sd, model = da_v2_vits
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(sum(size)))
    with torch.inference_mode():
        _check_close(model(x), reference_da_v2(sd, x))


@pytest.mark.parametrize("grid", [(37, 37), (37, 38), (2, 3), (74, 74), (1, 40)])
def test_da_v2_position_embeddings_match_official_rule(da_v2_vits, grid):
    # (37, 37) = a 518 x 518 input: the official shortcut uses the trained embeddings as they are
    sd, model = da_v2_vits
    n = grid[0] * grid[1]
    with torch.inference_mode():
        ours = model._position_embedding(grid[0], grid[1], n)
        ref = _ref_interpolate_pos(sd, n, grid[0] * 14, grid[1] * 14)
    assert ours.shape == (1, n + 1, 384)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    if grid == (37, 37):
        assert torch.equal(ours, sd["pretrained.pos_embed"])


def test_da_v2_batch_equals_single(da_v2_vits):
    _, model = da_v2_vits
    x = torch.randn(2, 3, 28, 56, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        both = model(x)
        one = model(x[1:])
    _check_close(both[1:], one)


# --- MiDaS DPT-Hybrid: the official module tree --------------------------------------------------------------

class _ProjectReadout(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU())

    def forward(self, x):
        readout = x[:, 0].unsqueeze(1).expand_as(x[:, 1:])
        return self.project(torch.cat((x[:, 1:], readout), -1))


class _Transpose(nn.Module):
    def forward(self, x):
        return x.transpose(1, 2)


class _RCU(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.conv1 = nn.Conv2d(f, f, 3, padding=1)
        self.conv2 = nn.Conv2d(f, f, 3, padding=1)


class _Fusion(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.out_conv = nn.Conv2d(f, f, 1)
        self.resConfUnit1 = _RCU(f)
        self.resConfUnit2 = _RCU(f)


class _OfficialHybrid(nn.Module):
    """The module tree ``DPTDepthModel(backbone="vitb_rn50_384", readout="project")`` builds, with the
    official forward hooks (ResNet stages 0, 1 and ViT blocks 8, 11)."""

    def __init__(self):
        super().__init__()
        import timm

        self.pretrained = nn.Module()
        self.pretrained.model = timm.create_model("vit_base_r50_s16_384", pretrained=False)
        for s in (1, 2):
            setattr(self.pretrained, f"act_postprocess{s}", nn.Sequential(nn.Identity(), nn.Identity(), nn.Identity()))
        self.pretrained.act_postprocess3 = nn.Sequential(
            _ProjectReadout(768), _Transpose(), nn.Unflatten(2, torch.Size([24, 24])), nn.Conv2d(768, 768, 1))
        self.pretrained.act_postprocess4 = nn.Sequential(
            _ProjectReadout(768), _Transpose(), nn.Unflatten(2, torch.Size([24, 24])), nn.Conv2d(768, 768, 1),
            nn.Conv2d(768, 768, 3, stride=2, padding=1))
        self.scratch = nn.Module()
        for i, c in enumerate([256, 512, 768, 768]):
            setattr(self.scratch, f"layer{i + 1}_rn", nn.Conv2d(c, 256, 3, padding=1, bias=False))
            setattr(self.scratch, f"refinenet{i + 1}", _Fusion(256))
        self.scratch.output_conv = nn.Sequential(
            nn.Conv2d(256, 128, 3, padding=1), nn.Identity(), nn.Conv2d(128, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 1, 1), nn.ReLU(), nn.Identity())
        self.activations = {}
        model = self.pretrained.model
        for s, module in ((0, model.patch_embed.backbone.stages[0]), (1, model.patch_embed.backbone.stages[1]),
                          (2, model.blocks[8]), (3, model.blocks[11])):
            module.register_forward_hook(self._hook(str(s + 1)))

    def _hook(self, name):
        def hook(module, inputs, output):
            self.activations[name] = output
        return hook

    def forward(self, x):
        """The official DPTDepthModel.forward: features, scratch, output_conv (Interpolate at index 1)."""
        path1 = _ref_scratch_from(self, x)
        head = self.scratch.output_conv
        y = F.interpolate(head[0](path1), scale_factor=2, mode="bilinear", align_corners=True)
        return head[2:](y).squeeze(1)


def test_dpt_hybrid_matches_official_module_tree():
    sd = random_official_depth_weights("midas_dpt", "dpt_hybrid", seed=2)
    with torch.device("meta"):
        ref = _OfficialHybrid().eval()
    ref.load_state_dict(sd, strict=True, assign=True)  # also proves our manifest is the official tree's
    ours = model_from_state_dict(sd, "random dpt_hybrid")
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(7))  # 4 x 6 grid: non-square resize
    with torch.inference_mode():
        _check_close(ours(x), ref(x))


def _ref_scratch_from(ref: "_OfficialHybrid", x: torch.Tensor) -> torch.Tensor:
    """forward_flex (hooks fill ref.activations) + forward_adapted_unflatten + the scratch decoder."""
    m = ref.pretrained.model
    b, c, h, w = x.shape
    posemb = m.pos_embed
    grid = posemb[0, 1:].reshape(1, 24, 24, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(h // 16, w // 16), mode="bilinear")
    grid = grid.permute(0, 2, 3, 1).reshape(1, (h // 16) * (w // 16), -1)
    pos_embed = torch.cat([posemb[:, :1], grid], dim=1)
    y = m.patch_embed.backbone(x)
    y = m.patch_embed.proj(y).flatten(2).transpose(1, 2)
    y = torch.cat((m.cls_token.expand(b, -1, -1), y), dim=1) + pos_embed
    for blk in m.blocks:
        y = blk(y)
    layers = []
    for s in range(1, 5):
        post = getattr(ref.pretrained, f"act_postprocess{s}")
        t = post[0:2](ref.activations[str(s)])
        if t.ndim == 3:
            t = nn.Unflatten(2, torch.Size([h // 16, w // 16]))(t)
        layers.append(post[3:](t))
    return _ref_scratch(ref.state_dict(), "scratch.", layers)
