"""Shared pieces of the benchmark scripts. The problems, peers, machine description and timing
helpers live in the package (``sadfast.bench``) so that ``sadfast bench`` and these scripts
measure the same way; this module adds where the scripts write their results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sadfast.bench._machine import fp64_peak_probe, machine, time_call, versions
from sadfast.bench.problems import PROBLEMS, BenchProblem, jax_loss, torch_loss

RESULTS = Path(__file__).resolve().parent / "results"

__all__ = [
    "PROBLEMS",
    "RESULTS",
    "BenchProblem",
    "fp64_peak_probe",
    "jax_loss",
    "machine",
    "time_call",
    "torch_loss",
    "versions",
    "write_json",
]


def write_json(name: str, payload: dict[str, Any], out: Path | None = None) -> Path:
    path = out or (RESULTS / f"{name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
