"""One intra-op thread for this folder's tests: the machine is shared and its 2 cores are
oversubscribed, where torch's thread pool spins and runs these tiny convs several times slower."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
