from __future__ import annotations

import shutil

import numpy as np
import pytest


def _cuda_device_present() -> bool:
    """A usable CUDA device, or the CPU warp emulator (SADFAST_CUDA_EMULATOR=1, docs/gpu_emulator.md)."""
    try:
        import sadfast
        from sadfast import cuda
    except Exception:
        return False
    if cuda.emulated():
        return cuda.available()  # raises when the emulator is asked for but not built
    if shutil.which("nvidia-smi") is None:
        return False
    return bool(getattr(sadfast, "cuda_available", lambda: False)())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_device_present():
        return
    skip = pytest.mark.skip(reason="no CUDA device on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20251123)
