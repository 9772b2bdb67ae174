"""Activations: the kernels' array path and the scalar reference against NumPy/SciPy formulas
and against finite differences; extreme arguments stay finite and accurate."""

from __future__ import annotations

import numpy as np
import pytest
import sadfast
from reference import SMOOTH, act_ref
from sadfast import _core
from scipy import special

NAMES = sadfast.ACTIVATIONS


def _grid() -> np.ndarray:
    core = np.linspace(-8, 8, 1601)
    tiny = np.array([1e-300, -1e-300, 1e-12, -1e-12, 1e-6, -1e-6, 0.3, -0.3])
    big = np.array([-745.0, -700.0, -100.0, -40.0, -30.0, -20.0, 20.0, 30.0, 40.0, 100.0, 700.0, 1e300])
    z = np.concatenate([core[np.abs(core) > 1e-9], tiny, big])
    return z + 1e-7  # keep away from the kinks at 0 of the non-smooth activations


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("path", ["array", "scalar"])
def test_against_numpy_formulas(name: str, path: str) -> None:
    z = _grid()
    if name in ("sigmoid", "swish", "softplus", "mish", "gelu", "tanh"):
        z = z[np.abs(z) < 700]  # the textbook formulas overflow beyond; tested separately below
    f, d1, d2 = _core.activation_eval(name, z, path == "scalar")
    rf, rd1, rd2 = act_ref(name, z)
    # Mixed tolerance: a few ulp relative, or a few ulp of 1 absolute where the value is tiny and the
    # textbook formula itself loses relative accuracy (e.g. 1 - tanh^2 for |z| > 3).
    for got, ref in ((f, rf), (d1, rd1), (d2, rd2)):
        np.testing.assert_allclose(got, ref, rtol=2e-14, atol=5e-15)


@pytest.mark.parametrize("name", NAMES)
def test_array_path_matches_scalar_reference(name: str) -> None:
    z = _grid()
    for a, b in zip(_core.activation_eval(name, z, False), _core.activation_eval(name, z, True), strict=True):
        # libmvec and glibc's scalar functions differ by a few ulp; cancellation inside the derivative
        # formulas (e.g. Phi + z*phi near its zero) magnifies that: ~1e-13 relative or ~1 ulp of the terms.
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_extreme_arguments_are_finite(name: str) -> None:
    z = np.array([-1e300, -1e5, -745.2, -40.0, 40.0, 745.2, 1e5, 1e300])
    for arr in _core.activation_eval(name, z, False):
        assert np.isfinite(arr).all(), (name, arr)


@pytest.mark.parametrize("name", SMOOTH)
def test_derivatives_by_finite_differences(name: str) -> None:
    z = np.linspace(-6, 6, 241)
    h = 1e-3
    f = {c: _core.activation_eval(name, z + c * h, False) for c in (2, 1, -1, -2)}

    def fd(k: int) -> np.ndarray:
        return (-f[2][k] + 8 * f[1][k] - 8 * f[-1][k] + f[-2][k]) / (12 * h)

    _, d1, d2 = _core.activation_eval(name, z, False)
    np.testing.assert_allclose(fd(0), d1, rtol=0, atol=1e-10)
    np.testing.assert_allclose(fd(1), d2, rtol=0, atol=1e-10)


def test_conventions_at_zero() -> None:
    z = np.zeros(1)
    assert _core.activation_eval("relu", z)[1][0] == 0.0
    assert _core.activation_eval("leaky_relu", z)[1][0] == 0.01
    assert _core.activation_eval("elu", z)[1][0] == 1.0
    assert _core.activation_eval("softplus", z)[0][0] == np.log(2.0)
    assert _core.activation_eval("gelu", z)[1][0] == 0.5


def test_tails_are_relatively_accurate() -> None:
    # Deep in the tails the stable forms keep full relative accuracy where 1 - s or 1 - t^2 cancel.
    z = np.array([-30.0, 30.0])
    _, d1, _ = _core.activation_eval("sigmoid", z)
    np.testing.assert_allclose(d1, np.exp(-30.0) / (1 + np.exp(-30.0)) ** 2, rtol=1e-14)
    _, d1, _ = _core.activation_eval("tanh", np.array([15.0]))
    np.testing.assert_allclose(d1, 1 / np.cosh(15.0) ** 2, rtol=1e-13)
    f, _, _ = _core.activation_eval("gelu", np.array([-10.0]))
    np.testing.assert_allclose(f, -10.0 * 0.5 * special.erfc(10 / np.sqrt(2)), rtol=1e-13)
    _, d1, _ = _core.activation_eval("elu", np.array([-30.0]))
    np.testing.assert_allclose(d1, np.exp(-30.0), rtol=1e-14)
