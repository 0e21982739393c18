"""The kernel table of the classical renderer (bokehme_core.scatter.table): every (mode, lens, aperture, device,
backend) cell maps to a kernel that accepts the arguments render_classical passes, or to the one clear error;
walked by signature on CPU, the CuPy and numba cells included (their packages faked as present or absent)."""

from __future__ import annotations

import inspect
import itertools

import pytest
import torch

from bokehme_core import Aperture, render_classical
from bokehme_core.aperture import LensShape
from bokehme_core.scatter import BACKENDS, MODES, cupy_backend, numba_backend, table
from bokehme_core.scatter.common import LENS_KINDS, Cell

APERTURES = {"circle": Aperture.circle(), "polygon": Aperture.polygon(6), "mask": Aperture.from_mask(torch.ones(5, 5))}
LENSES = {"none": None, "neutral": LensShape(), "cat_eye+ring": LensShape(cat_eye=0.5, ring=0.3),
          "swirl": LensShape(swirl=0.4), "fringe": LensShape(fringe=0.05)}


def _binds(cell: Cell, lens) -> None:
    """The kernel accepts the arguments Cell.run passes (render_classical's call), and nothing else is required."""
    image, defocus, progress = torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 4, 4), None
    args = (image, defocus, APERTURES["circle"], lens, progress) if cell.lens == "shaped" else \
        (image, defocus, APERTURES["circle"], progress)
    inspect.signature(cell.kernel).bind(*args)


def test_every_declared_cell_accepts_its_calling_convention():
    cells = table.cells()
    assert {c.backend for c in cells} == set(BACKENDS) - {"auto"} == set(table.BACKENDS)
    for cell in cells:
        assert cell.mode in MODES and cell.lens in LENS_KINDS, cell
        assert set(cell.apertures) <= {"circle", "polygon", "mask"}, cell
        _binds(cell, LensShape(cat_eye=0.5))
    # a plain kernel takes no lens at all: handing it one is the TypeError this table exists to prevent
    plain = [c for c in cells if c.lens == "plain"]
    for cell in plain:
        with pytest.raises(TypeError):
            inspect.signature(cell.kernel).bind(torch.zeros(1), torch.zeros(1), APERTURES["circle"], None, None,
                                                lens=LensShape(cat_eye=0.5))
    # torch runs every cell: the fallback of all the others
    torch_cells = {(c.mode, c.lens) for c in cells if c.backend == "torch" and len(c.apertures) == 3}
    assert torch_cells == set(itertools.product(MODES, LENS_KINDS))


@pytest.fixture(params=["absent", "present"])
def optional_packages(request, monkeypatch):
    """numba and CuPy faked as both installed ("present", a CUDA device too) or both missing ("absent")."""
    present = request.param == "present"
    monkeypatch.setattr(numba_backend, "available",
                        lambda device=None: present and (device is None or torch.device(device).type == "cpu"))
    monkeypatch.setattr(cupy_backend, "available",
                        lambda device=None: present and (device is None or torch.device(device).type == "cuda"))
    return present


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_whole_table_by_signature(optional_packages, device):
    """Every (mode, lens, aperture, backend) on CPU and CUDA: a kernel that accepts the call, or one ValueError that
    names the mode, the lens, the aperture and the device."""
    for mode, (lens_name, lens), (aperture_name, aperture), backend in itertools.product(
            MODES, LENSES.items(), APERTURES.items(), BACKENDS):
        try:
            cell = table.lookup(mode, lens, aperture, device, backend)
        except ValueError as exc:
            message = str(exc)
            assert backend != "auto" and backend != "torch", message  # auto and torch always find a kernel
            assert f"mode={mode!r}" in message and f"aperture={aperture_name!r}" in message, message
            assert f"device {device}" in message and f"backend={backend!r}" in message, message
            assert ("lens=none" if lens is None else f"lens={table.lens_kind(lens)}") in message, message
            continue
        assert cell.mode == mode and cell.lens == table.lens_kind(lens) and aperture_name in cell.apertures
        assert backend in ("auto", cell.backend)
        _binds(cell, lens)


def test_cupy_with_a_lens_shape_falls_back_to_torch(monkeypatch):
    """The bug the table fixed: CuPy installed, a CUDA image, exact mode and a cat's eye / swirl / ring lens used
    to reach scatter_exact_cupy(lens=...) (TypeError)."""
    monkeypatch.setattr(cupy_backend, "available",
                        lambda device=None: device is None or torch.device(device).type == "cuda")
    plain = table.lookup("exact", None, Aperture.circle(), "cuda")
    assert plain.kernel is cupy_backend.scatter_exact_cupy
    for lens in (LensShape(cat_eye=0.6), LensShape(swirl=0.5), LensShape(ring=0.4)):
        cell = table.lookup("exact", lens, Aperture.circle(), "cuda")
        assert cell.backend == "torch" and cell.lens == "shaped"
        _binds(cell, lens)
    assert table.lookup("exact", None, APERTURES["mask"], "cuda").backend == "torch"
    assert table.lookup("exact", LensShape(fringe=0.1), Aperture.circle(), "cuda").kernel is \
        cupy_backend.scatter_exact_cupy  # fringe alone: three plain renders
    with pytest.raises(ValueError, match=r"no kernel for mode='exact', lens=shaped LensShape\(cat_eye=0.6, "
                                         r"swirl=0.0, ring=0.0, fringe=0.0\), aperture='circle' on device cuda with "
                                         r"backend='cupy': backend='cupy' has no exact kernel for a shaped lens"):
        table.lookup("exact", LensShape(cat_eye=0.6), Aperture.circle(), "cuda", "cupy")


def test_cell_run_hands_the_lens_to_shaped_kernels_only():
    calls = []

    def plain(image, defocus_px, aperture, progress=None):
        calls.append(("plain", progress))

    def shaped(image, defocus_px, aperture, lens, progress=None):
        calls.append(("shaped", lens, progress))

    lens = LensShape(ring=0.5)
    Cell("test", "exact", "plain", plain).run(None, None, None, lens, "p")
    Cell("test", "exact", "shaped", shaped).run(None, None, None, lens, "p")
    assert calls == [("plain", "p"), ("shaped", lens, "p")]


def test_dilation_follows_the_backend(optional_packages):
    from bokehme_core.scatter.dilate import dilate_defocus

    expected = numba_backend.dilate_defocus_numba if optional_packages else dilate_defocus
    assert table.dilation("cpu") is expected
    assert table.dilation("cpu", "torch") is dilate_defocus
    assert table.dilation("cuda") is dilate_defocus and table.dilation("cuda", "cupy") is dilate_defocus


def test_render_classical_uses_the_table(monkeypatch):
    """render_classical decides nothing itself: the cell the table returns is the one that renders."""
    seen = []

    def fake(image, defocus_px, aperture, lens, progress=None):
        seen.append(lens)
        return image.clone()

    monkeypatch.setattr(table, "lookup", lambda mode, lens, aperture, device, backend="auto":
                        Cell("fake", mode, "shaped", fake))
    image = torch.rand(1, 3, 6, 7)
    lens = LensShape(cat_eye=0.3)
    out = render_classical(image, torch.ones(1, 1, 6, 7), mode="fast", lens=lens, backend="torch")
    assert seen == [lens] and torch.equal(out.bokeh, image)


# --- the aperture profile: four production copies, one parity test ----------------------------------------------

def _exact_cells_here():
    """(name, render) of every exact-mode kernel that can run here: each evaluates its own copy of the aperture
    profile (see Aperture.profile). The lens kernels run with a cat's eye, which is exactly the plain shape at the
    frame centre (where the test's light sits), and return raw sums."""
    lens = LensShape(cat_eye=0.6)
    out = []
    for cell in table.cells():
        if cell.mode != "exact":
            continue
        module = table.BACKENDS[cell.backend]
        device = "cuda" if cell.backend == "cupy" else "cpu"
        if not module.available(device):
            continue
        out.append((f"{cell.backend}/{cell.lens}", cell, device, lens if cell.lens == "shaped" else None))
    return out


@pytest.mark.parametrize("aperture", [Aperture.circle(), Aperture.polygon(6, rotation=0.3), Aperture.circle(0.6),
                                      Aperture.polygon(5, anamorphic=1.6)],
                         ids=["circle", "hexagon", "anamorphic", "anamorphic-pentagon"])
@pytest.mark.parametrize("radius", [3.3, 11.7])
def test_aperture_profile_copies_agree(aperture, radius):
    """A point light on black, one radius everywhere: every exact kernel draws Aperture.kernel(radius) (the
    normalised profile) around it, to the interior approximation (6e-6) and float32 rounding."""
    size = 4 * int(radius) + 11  # odd: the light is at the frame centre
    c = size // 2
    image = torch.zeros(1, 3, size, size)
    image[..., c, c] = 1.0
    defocus = torch.full((1, 1, size, size), radius)
    expected = aperture.kernel(radius)  # (2*wy+1, 2*wx+1), sums to 1
    wy, wx = (expected.shape[0] - 1) // 2, (expected.shape[1] - 1) // 2
    cells = _exact_cells_here()
    assert {"torch/plain", "torch/shaped"} <= {name for name, *_ in cells}
    for name, cell, device, lens in cells:
        if aperture.kind not in cell.apertures:
            continue
        if lens is None:
            out = cell.run(image.to(device), defocus.to(device), aperture, lens, None).cpu()[0, 0]
        else:  # the light's own kernel (its neighbours' lemons differ a little): the raw sums, normalised
            out = cell.kernel(image.to(device), defocus.to(device), aperture, lens, None, raw=True).cpu()[0, 0]
            out = out / out.sum()
        drawn = out[c - wy:c + wy + 1, c - wx:c + wx + 1]
        torch.testing.assert_close(drawn, expected, atol=2e-6, rtol=1e-4, msg=name)
        assert float(out.sum() - drawn.sum()) == pytest.approx(0.0, abs=1e-6), name  # nothing outside the window
