"""bench/calibrate_fusion.py: the rule that chooses ``LAYERED_TRUST`` from its measurements."""

from __future__ import annotations

import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

calibrate_fusion = pytest.importorskip("calibrate_fusion")


def _rows(loss_per_scale: dict, kind: str = "exact") -> list:
    """Two images in each of two cells; the second cell loses ``loss_per_scale[s]`` dB at scale s."""
    rows = []
    for cell, loss in (((10, 0.5), {}), ((30, 0.1), loss_per_scale)):
        for base in (30.0, 34.0):
            psnr = {str(s): base + 0.05 * s - loss.get(s, 0.0) for s in calibrate_fusion.SCALES}
            rows.append({"item": f"i{base}", "map": kind, "K": cell[0], "focus": cell[1], "psnr": psnr})
    return rows


def test_the_largest_scale_whose_worst_exact_cell_stays_within_the_tolerance():
    losses = {0.125: 0.0, 0.25: 0.05, 0.375: 0.12, 0.5: 0.3, 0.75: 0.6, 1.0: 1.0}
    # scale 0.375 loses 0.12 - 0.05 * 0.375 = 0.10 dB net: just over the tolerance
    assert calibrate_fusion.choose_scale(_rows(losses)) == 0.25
    assert calibrate_fusion.choose_scale(_rows({})) == 1.0  # the networks never cost: trust them fully
    assert calibrate_fusion.choose_scale(_rows({s: 1.0 for s in calibrate_fusion.SCALES[1:]})) == 0.0
    # only exact-map rows decide: a corrupted map's losses do not
    assert calibrate_fusion.choose_scale(_rows({}) + _rows({1.0: 5.0}, "predicted")) == 1.0


def test_the_chosen_constant_is_one_of_the_scales():
    from bokehme_core.error_map import LAYERED_TRUST

    assert LAYERED_TRUST in calibrate_fusion.SCALES and LAYERED_TRUST > 0
