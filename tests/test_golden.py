"""Golden outputs (tests/data/golden.npz, written by tests/make_golden.py from the 0.1.0 code): the public API
and the main nodes give the same results within 1e-6 after refactors and with every new control neutral."""

from __future__ import annotations

import numpy as np
import pytest

import bokehme_core
from make_golden import GOLDEN, core_cases, node_cases

TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as z:
        return {k: z[k] for k in z.files}


def _compare(golden: dict, computed: dict) -> None:
    assert computed, "no cases computed"
    for name, value in computed.items():
        assert name in golden, f"{name} has no golden value: regenerate tests/data/golden.npz on purpose"
        assert value.shape == golden[name].shape, name
        diff = float(np.abs(value - golden[name]).max())
        assert diff <= TOLERANCE, f"{name}: max |difference| {diff:.3g} > {TOLERANCE:g}"


def test_core_api_matches_golden(golden):
    _compare(golden, core_cases(bokehme_core))


def test_nodes_match_golden(golden, pack):
    _compare(golden, node_cases(pack))
