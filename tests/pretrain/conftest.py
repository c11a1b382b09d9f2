"""Tiny models are dominated by per-op overhead: on a shared 2-core machine a second torch thread only
spins (measured: 51 ms vs 1.3 s per step of the benchmark ViT), so these tests run single-threaded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
