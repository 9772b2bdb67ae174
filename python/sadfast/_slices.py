"""Running native solvers in short slices: progress bars, and Ctrl-C seen between slices."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ._status import FlowStatus


class BatchViews:
    """Read-only NumPy views of a native batch's fields, and status counts."""

    _batch: Any

    def _view(self, name: str) -> np.ndarray:
        a = self._batch.array(name)
        a.flags.writeable = False
        return a

    @property
    def K(self) -> int:
        return int(self._batch.K)

    @property
    def status(self) -> np.ndarray:
        return self._view("status")

    def status_counts(self) -> dict[str, int]:
        codes, counts = np.unique(self.status, return_counts=True)
        return {FlowStatus(int(c)).name: int(n) for c, n in zip(codes, counts, strict=True)}


def run_in_slices(
    advance: Callable[[int], int],
    result: Any,
    *,
    progress: bool | None,
    desc: str,
    unit: str,
    postfix: Callable[[], str],
    start: float,
    budget: int,
    max_budget: int,
) -> None:
    """Call ``advance(budget) -> flows still running`` until none runs, sizing the budget so a
    slice takes about a quarter second. Sets ``result.wall_time``; on Ctrl-C the
    ``KeyboardInterrupt`` carries the (consistent, resumable) result as ``.result``."""
    if progress is None:
        progress = sys.stderr.isatty()
    K = result.K
    running = int(np.count_nonzero(result._batch.array("status") == FlowStatus.RUNNING))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=K, initial=K - running, unit=unit, desc=desc, dynamic_ncols=True)
    try:
        while running > 0:
            t0 = time.perf_counter()
            running = int(advance(budget))
            dt = time.perf_counter() - t0
            budget = int(min(max(budget * 0.25 / max(dt, 1e-4), 4), max_budget))
            if bar is not None:
                bar.n = K - running
                bar.set_postfix_str(postfix() if running else "done", refresh=False)
                bar.refresh()
    except KeyboardInterrupt as exc:
        result.wall_time = time.perf_counter() - start
        exc.result = result  # type: ignore[attr-defined]
        raise
    finally:
        if bar is not None:
            bar.close()
    result.wall_time = time.perf_counter() - start
