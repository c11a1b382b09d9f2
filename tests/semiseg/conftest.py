"""One torch thread for the tiny U-Nets: on a busy 2-core machine two OpenMP threads are many times slower."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
