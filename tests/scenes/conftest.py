import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tests run tiny convolutions, which gain nothing from threads and lose a lot
    when the cores are shared (the short training test: 1.4 s on one thread, 30 s on two,
    on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
