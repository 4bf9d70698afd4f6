"""vipo.device.resolve_device: 'auto'/'' picks CUDA when there is one, else the CPU; CUDA asked for without one is
refused in one line; under a launcher 'cuda' becomes this rank's own GPU."""

from types import SimpleNamespace

import pytest
import torch

from vipo import dist
from vipo.device import resolve_device
from vipo.errors import UserError


@pytest.fixture()
def no_launcher(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(dist, "_alone", False)
    monkeypatch.setattr(dist, "_state", None)


@pytest.mark.parametrize("name", ["", "auto"])
def test_auto_is_the_cpu_without_cuda(monkeypatch, no_launcher, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(name) == "cpu"


@pytest.mark.parametrize("name", ["", "auto"])
def test_auto_is_cuda_when_there_is_one(monkeypatch, no_launcher, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(name) == "cuda"


@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_device_is_refused_naming_it(monkeypatch, no_launcher, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError) as e:
        resolve_device(name)
    assert str(e.value) == f"device: {name} asked for but no CUDA device is available"


def test_explicit_names_pass_through_unchanged(monkeypatch, no_launcher):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda:1") == "cuda:1"
    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == "cpu"  # the CPU never needs CUDA
    assert resolve_device("mps") == "mps"  # other backends are torch's to check


def test_under_a_launcher_cuda_is_this_ranks_gpu(monkeypatch):
    # a launcher started two processes and the process group is joined: this rank's device is cuda:1
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "_alone", False)
    monkeypatch.setattr(dist, "_state", SimpleNamespace(device=torch.device("cuda", 1), num_processes=2))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda") == "cuda:1"
    assert resolve_device("auto") == "cuda:1"
    assert resolve_device("cpu") == "cpu"  # a CPU rank keeps the CPU
