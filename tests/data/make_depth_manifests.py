"""Write depth_official_manifests.json: the official key names and shapes of Depth Anything V2 vits and MiDaS
DPT-Hybrid, enumerated by hand from the official model code (not from our modules), so that a test can check
that our converter reproduces exactly the official layout.

Sources read: DepthAnything/Depth-Anything-V2 ``depth_anything_v2/dpt.py``, ``dinov2.py``, ``util/blocks.py``
(DINOv2 ViT-S/14: 12 blocks, dim 384, mlp 1536, layer scale, img 518 -> 1370 position tokens, mask_token;
DPTHead features 64, out_channels 48/96/192/384); isl-org/MiDaS ``midas/dpt_depth.py``, ``blocks.py``,
``backbones/vit.py``, ``backbones/utils.py`` (timm vit_base_resnet50_384: ResNetV2 stem 64, stages (3, 4, 9)
bottlenecks of width 64/128/256 and output 256/512/1024, proj 1x1 1024 -> 768, 12 ViT-B blocks, classifier 1000;
readout "project", act_postprocess3/4, scratch 256, output_conv).

Run: ``.venv/bin/python tests/data/make_depth_manifests.py`` (only when the layouts are re-read).
"""

import json
import pathlib


def vit_blocks(prefix, n, dim, layer_scale):
    keys = []
    for i in range(n):
        b = f"{prefix}blocks.{i}."
        keys += [(b + "norm1.weight", [dim]), (b + "norm1.bias", [dim]),
                 (b + "attn.qkv.weight", [3 * dim, dim]), (b + "attn.qkv.bias", [3 * dim]),
                 (b + "attn.proj.weight", [dim, dim]), (b + "attn.proj.bias", [dim])]
        if layer_scale:
            keys.append((b + "ls1.gamma", [dim]))
        keys += [(b + "norm2.weight", [dim]), (b + "norm2.bias", [dim]),
                 (b + "mlp.fc1.weight", [4 * dim, dim]), (b + "mlp.fc1.bias", [4 * dim]),
                 (b + "mlp.fc2.weight", [dim, 4 * dim]), (b + "mlp.fc2.bias", [dim])]
        if layer_scale:
            keys.append((b + "ls2.gamma", [dim]))
    return keys


def fusion(prefix, in_channels, features):
    keys = []
    for i, c in enumerate(in_channels):
        keys.append((f"{prefix}layer{i + 1}_rn.weight", [features, c, 3, 3]))
    for i in range(4):
        r = f"{prefix}refinenet{i + 1}."
        keys += [(r + "out_conv.weight", [features, features, 1, 1]), (r + "out_conv.bias", [features])]
        for unit in ("resConfUnit1", "resConfUnit2"):
            for conv in ("conv1", "conv2"):
                keys += [(f"{r}{unit}.{conv}.weight", [features, features, 3, 3]), (f"{r}{unit}.{conv}.bias", [features])]
    return keys


def da_v2_vits():
    d, oc, f = 384, [48, 96, 192, 384], 64
    keys = [("pretrained.cls_token", [1, 1, d]), ("pretrained.pos_embed", [1, 1370, d]),
            ("pretrained.mask_token", [1, d]),
            ("pretrained.patch_embed.proj.weight", [d, 3, 14, 14]), ("pretrained.patch_embed.proj.bias", [d])]
    keys += vit_blocks("pretrained.", 12, d, True)
    keys += [("pretrained.norm.weight", [d]), ("pretrained.norm.bias", [d])]
    for i, c in enumerate(oc):
        keys += [(f"depth_head.projects.{i}.weight", [c, d, 1, 1]), (f"depth_head.projects.{i}.bias", [c])]
    keys += [("depth_head.resize_layers.0.weight", [oc[0], oc[0], 4, 4]), ("depth_head.resize_layers.0.bias", [oc[0]]),
             ("depth_head.resize_layers.1.weight", [oc[1], oc[1], 2, 2]), ("depth_head.resize_layers.1.bias", [oc[1]]),
             ("depth_head.resize_layers.3.weight", [oc[3], oc[3], 3, 3]), ("depth_head.resize_layers.3.bias", [oc[3]])]
    keys += fusion("depth_head.scratch.", oc, f)
    keys += [("depth_head.scratch.output_conv1.weight", [f // 2, f, 3, 3]), ("depth_head.scratch.output_conv1.bias", [f // 2]),
             ("depth_head.scratch.output_conv2.0.weight", [32, f // 2, 3, 3]), ("depth_head.scratch.output_conv2.0.bias", [32]),
             ("depth_head.scratch.output_conv2.2.weight", [1, 32, 1, 1]), ("depth_head.scratch.output_conv2.2.bias", [1])]
    return keys


def dpt_hybrid():
    d = 768
    p = "pretrained.model."
    rb = p + "patch_embed.backbone."
    keys = [(p + "cls_token", [1, 1, d]), (p + "pos_embed", [1, 577, d]),
            (rb + "stem.conv.weight", [64, 3, 7, 7]), (rb + "stem.norm.weight", [64]), (rb + "stem.norm.bias", [64])]
    in_c = 64
    for s, (n, mid) in enumerate([(3, 64), (4, 128), (9, 256)]):
        out = 4 * mid
        for b in range(n):
            k = f"{rb}stages.{s}.blocks.{b}."
            if b == 0:
                keys += [(k + "downsample.conv.weight", [out, in_c, 1, 1]),
                         (k + "downsample.norm.weight", [out]), (k + "downsample.norm.bias", [out])]
            cin = in_c if b == 0 else out
            keys += [(k + "conv1.weight", [mid, cin, 1, 1]), (k + "norm1.weight", [mid]), (k + "norm1.bias", [mid]),
                     (k + "conv2.weight", [mid, mid, 3, 3]), (k + "norm2.weight", [mid]), (k + "norm2.bias", [mid]),
                     (k + "conv3.weight", [out, mid, 1, 1]), (k + "norm3.weight", [out]), (k + "norm3.bias", [out])]
        in_c = out
    keys += [(p + "patch_embed.proj.weight", [d, 1024, 1, 1]), (p + "patch_embed.proj.bias", [d])]
    keys += vit_blocks(p, 12, d, False)
    keys += [(p + "norm.weight", [d]), (p + "norm.bias", [d]), (p + "head.weight", [1000, d]), (p + "head.bias", [1000])]
    for s in (3, 4):
        a = f"pretrained.act_postprocess{s}."
        keys += [(a + "0.project.0.weight", [d, 2 * d]), (a + "0.project.0.bias", [d]),
                 (a + "3.weight", [d, d, 1, 1]), (a + "3.bias", [d])]
    keys += [("pretrained.act_postprocess4.4.weight", [d, d, 3, 3]), ("pretrained.act_postprocess4.4.bias", [d])]
    keys += fusion("scratch.", [256, 512, 768, 768], 256)
    keys += [("scratch.output_conv.0.weight", [128, 256, 3, 3]), ("scratch.output_conv.0.bias", [128]),
             ("scratch.output_conv.2.weight", [32, 128, 3, 3]), ("scratch.output_conv.2.bias", [32]),
             ("scratch.output_conv.4.weight", [1, 32, 1, 1]), ("scratch.output_conv.4.bias", [1])]
    return keys


if __name__ == "__main__":
    out = pathlib.Path(__file__).with_name("depth_official_manifests.json")
    data = {"depth_anything_v2_vits": sorted(da_v2_vits()), "dpt_hybrid_384": sorted(dpt_hybrid())}
    out.write_text(json.dumps(data, indent=0) + "\n")
    print(f"wrote {out}: " + ", ".join(f"{k} {len(v)} keys" for k, v in data.items()))
