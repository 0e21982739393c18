"""bokehme_core.clipped_regions: labelling of clipped regions and the per-region gain estimate."""

import numpy as np
import pytest
import torch

from bokehme_core.clipped_regions import label_regions, region_gains
from helpers import clipped_photo as _photo

THRESHOLD = 0.9965  # the recovery's "clipped" level (254/255 is not)


def _gain_at(pixels: torch.Tensor, gains: torch.Tensor, y: int, x: int, width: int = 128) -> float:
    hit = (pixels == y * width + x).nonzero()
    assert hit.numel() == 1, f"({y}, {x}) is not clipped"
    return float(gains[hit[0, 0]])


def _flood_fill_reference(mask: np.ndarray) -> np.ndarray:
    """Slow 8-connected labelling (regions numbered by first pixel in row-major order), -1 outside."""
    labels = np.full(mask.shape, -1)
    count = 0
    for start in zip(*np.nonzero(mask)):
        if labels[start] >= 0:
            continue
        stack = [start]
        labels[start] = count
        while stack:
            y, x = stack.pop()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and labels[ny, nx] < 0:
                        labels[ny, nx] = count
                        stack.append((ny, nx))
        count += 1
    return labels


# --- smoke / shapes ---------------------------------------------------------------------------------------------
def test_no_clipped_pixels_gives_nothing():
    pixels, gains = region_gains(torch.full((1, 3, 8, 8), 0.5), THRESHOLD, 2.5)
    assert pixels.shape == (0,) and gains.shape == (0,)


@pytest.mark.parametrize("seed", range(4))
def test_labels_match_a_slow_flood_fill(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((2, 13, 17)) < 0.35
    coords, labels, count = label_regions(torch.from_numpy(mask))
    for b in range(2):
        reference = _flood_fill_reference(mask[b])
        mine = np.full(mask[b].shape, -1)
        sel = coords[:, 0] == b
        mine[coords[sel, 1].numpy(), coords[sel, 2].numpy()] = labels[sel].numpy()
        # the same partition (numbering differs: ours counts across the batch)
        pairs = {(int(r), int(m)) for r, m in zip(reference[mask[b]], mine[mask[b]])}
        assert len(pairs) == len({r for r, _ in pairs}) == len({m for _, m in pairs})
    assert count == sum(_flood_fill_reference(mask[b]).max() + 1 for b in range(2))


def test_diagonal_neighbours_join_and_batches_stay_apart():
    mask = torch.zeros(2, 6, 6, dtype=torch.bool)
    mask[0, 1, 1] = mask[0, 2, 2] = mask[0, 3, 1] = True  # one region (8-connected)
    mask[0, 5, 5] = True
    mask[1, 1, 1] = True  # same place, other image: its own region
    _, labels, count = label_regions(mask)
    assert count == 3
    assert labels.tolist() == [0, 0, 0, 1, 2]


# --- properties ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("glow", [0.0, 0.2])
def test_small_light_gets_a_larger_gain_than_a_large_surface_just_above_white(glow):
    image, light, panel = _photo(light_gain=8.0, panel_gain=1.1, glow=glow)
    pixels, gains = region_gains(image, THRESHOLD, 2.5)
    light_gain, panel_gain = _gain_at(pixels, gains, *light), _gain_at(pixels, gains, *panel)
    assert light_gain > panel_gain
    assert panel_gain < 1.5  # a surface just above white is lifted little
    assert 2.0 < light_gain <= 2.5  # a light ending in a hard step keeps about the prior, never more


def test_one_gain_per_region_within_bounds():
    image, light, panel = _photo()
    pixels, gains = region_gains(image, THRESHOLD, 2.5)
    coords, labels, count = label_regions(image.amax(dim=1) > THRESHOLD)
    assert torch.equal(pixels, coords[:, 1] * 128 + coords[:, 2])  # the same pixels, the same order
    assert count == 2
    for region in range(count):
        assert gains[labels == region].unique().numel() == 1
    assert bool((gains >= 1.0).all()) and bool((gains <= 2.5).all())  # never above the prior


def test_dimmer_surfaces_get_lower_gains():
    """Monotone in the truth: the brighter the surface, the less of its graded rim survives, the larger its gain."""
    estimates = []
    for panel_gain in (1.05, 1.5, 2.5):
        image, _, panel = _photo(panel_gain=panel_gain)
        estimates.append(_gain_at(*region_gains(image, THRESHOLD, 4.0), *panel))
    assert estimates[0] < estimates[1] < estimates[2]


def test_deterministic_and_batch_split_invariant():
    a, _, _ = _photo(light_gain=3.0, panel_gain=1.2)
    b, _, _ = _photo(light_gain=12.0, panel_gain=1.02, glow=0.1)
    batch = torch.cat([a, b])
    pixels, gains = region_gains(batch, THRESHOLD, 2.5)
    again = region_gains(batch, THRESHOLD, 2.5)
    assert torch.equal(pixels, again[0]) and torch.equal(gains, again[1])
    size = 96 * 128
    for i, single in enumerate((a, b)):
        p1, g1 = region_gains(single, THRESHOLD, 2.5)
        sel = pixels // size == i
        assert torch.equal(pixels[sel] - i * size, p1)
        torch.testing.assert_close(gains[sel], g1)


def test_regions_touching_the_border():
    image = torch.full((1, 3, 10, 10), 0.3)
    image[..., :4, :4] = 1.0  # a clipped corner: rim pairs leaving the frame are skipped
    image[..., 9, 9] = 1.0  # a one-pixel light in the other corner
    pixels, gains = region_gains(image, THRESHOLD, 2.5)
    assert pixels.shape[0] == 17 and bool(torch.isfinite(gains).all())


# --- exceptions and bad values -------------------------------------------------------------------------------------
def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="image"):
        region_gains(torch.ones(1, 4, 8, 8), THRESHOLD, 2.5)
    with pytest.raises(ValueError, match="prior"):
        region_gains(torch.ones(1, 3, 8, 8), THRESHOLD, 0.5)
    with pytest.raises(ValueError, match="threshold"):
        region_gains(torch.ones(1, 3, 8, 8), 1.5, 2.5)
    with pytest.raises(ValueError, match="must be"):
        label_regions(torch.ones(8, 8, dtype=torch.bool))


def test_non_finite_neighbours_do_not_poison_the_gain():
    image, light, _ = _photo()
    image[..., light[0] + 4, light[1]] = float("nan")
    image[..., light[0], light[1] + 4] = float("inf")
    pixels, gains = region_gains(image, THRESHOLD, 2.5)
    assert bool(torch.isfinite(gains).all()) and bool((gains >= 1).all()) and bool((gains <= 2.5).all())
