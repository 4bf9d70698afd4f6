"""Helpers shared by unit tests of several modules (the learned world critic)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread is faster than two fighting over a busy machine
    yield
    torch.set_num_threads(before)
