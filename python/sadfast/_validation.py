"""Argument checks shared by the public API. Every message names the argument, what was expected
and what was given."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray


def _describe(a: Any) -> str:
    if isinstance(a, np.ndarray):
        return f"array of shape {a.shape} and dtype {a.dtype}"
    return f"{type(a).__name__}"


def as_real_array(x: Any, name: str, *, ndims: Sequence[int], finite: bool = True) -> NDArray[np.float64]:
    """Return `x` as a C-contiguous float64 array (copying only when needed).

    Integer and floating inputs are converted; booleans, complex numbers, strings and objects are
    rejected (TypeError), as are arrays of another dimension (ValueError) and, when `finite`,
    NaN or infinite entries (ValueError).
    """
    try:
        a = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name}: expected a real numeric array, got {_describe(x)} ({exc})") from None
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{name}: expected a real numeric array (float or int), got {_describe(a)}")
    if a.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name}: expected a {want} array, got {_describe(a)}")
    a = np.ascontiguousarray(a, dtype=np.float64)
    if finite and not np.isfinite(a).all():
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise ValueError(f"{name}: expected finite values, got {bad} NaN or infinite entries")
    return a


def check_name(value: Any, name: str, allowed: Sequence[str]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected one of {list(allowed)}, got {_describe(value)}")
    if value not in allowed:
        raise ValueError(f"{name}: unknown name {value!r}; expected one of {list(allowed)}")
    return value


def check_int(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {_describe(value)}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def check_nonneg_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a finite number >= 0, got {_describe(value)}")
    v = float(value)
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {value}")
    return v


def check_finite_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a finite number, got {_describe(value)}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    return v


def check_optional_bool(value: Any, name: str) -> bool | None:
    """True, False or None (numpy booleans too), else a TypeError naming `name`."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    raise TypeError(f"{name}: expected True, False or None, got {_describe(value)}")


def check_bool(value: Any, name: str) -> bool:
    """True or False (numpy booleans too), else a TypeError naming `name`."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name}: expected True or False, got {_describe(value)}")
