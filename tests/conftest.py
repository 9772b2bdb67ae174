from __future__ import annotations

import shutil

import numpy as np
import pytest


def _cuda_device_present() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        import sadfast

        return bool(getattr(sadfast, "cuda_available", lambda: False)())
    except Exception:
        return False


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
