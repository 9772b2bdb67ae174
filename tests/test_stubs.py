"""Types: the stubs of the native extension (python/sadfast/_core.pyi) against the extension
itself (every function, class, method and property the stubs declare exists with the same
signature, and the extension has nothing the stubs leave out: mypy's stubtest), and mypy over the
installed package."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from sadfast import _core

pytest.importorskip("mypy.stubtest")

# What stubtest reports that no stub can fix: pybind11 classes have pybind11's own metaclass, and
# classes bound module-local carry pybind11's capsule attribute.
_PYBIND = (
    re.compile(r"^sadfast\._core\.\w+ is inconsistent, metaclass differs$"),
    re.compile(r"^sadfast\._core\.\w+\.__pybind11_module_local\w*__ is not present in stub$"),
)
# The CUDA backend's functions and classes exist only in builds with nvcc.
_CUDA = re.compile(r"^sadfast\._core\.(cuda_\w+|Cuda\w+) is not present at runtime$")


def _mypy(tool: str, *args: str, cwd) -> subprocess.CompletedProcess[str]:
    """``python -m <tool> args`` in ``cwd`` (the checkout may be read-only)."""
    return subprocess.run(
        [sys.executable, "-m", tool, *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_core_stubs_match_the_extension(tmp_path) -> None:
    p = _mypy("mypy.stubtest", "sadfast._core", "--concise", cwd=tmp_path)
    errors = [line for line in p.stdout.splitlines() if line.startswith("sadfast._core")]
    left = [e for e in errors if not any(r.match(e) for r in _PYBIND)]
    if not _core.cuda_built():
        left = [e for e in left if not _CUDA.match(e)]
    else:  # the CUDA part is checked too
        assert not any(_CUDA.match(e) for e in errors), errors
    assert not left, "\n".join(left)
    assert p.returncode in (0, 1) and (p.returncode == 0) == (not errors), p.stdout + p.stderr


def test_package_type_checks(tmp_path) -> None:
    """mypy over the installed package, with the project's configuration (pyproject.toml)."""
    config = Path(__file__).resolve().parents[1] / "pyproject.toml"
    p = _mypy(
        "mypy", "-p", "sadfast", "--config-file", str(config), "--cache-dir", str(tmp_path), cwd=tmp_path
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Success: no issues found" in p.stdout
