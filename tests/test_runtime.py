"""The shared torch runtime (crashsafe.runtime) and torchrun place (crashsafe.torchrun)."""

from __future__ import annotations

import pytest
import torch

from crashsafe.runtime import (amp_dtype, autocast, grad_scaler, resolve_device, rng_state,
                               set_rng_state, torch_threads)
from crashsafe.torchrun import Place, join_group, place


def test_torch_threads_restores_the_count_it_found():
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with torch_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(other):
        raise RuntimeError("the count comes back on an error too")
    assert torch.get_num_threads() == before
    with torch_threads(None):  # None: leave the process's setting alone
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="at least 1"), torch_threads(0):
        pass


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_without_cuda_is_refused_clearly():
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")


def test_the_cpu_runs_in_float32_without_loss_scaling():
    cpu = torch.device("cpu")
    assert amp_dtype(cpu) is None
    assert not grad_scaler(cpu).is_enabled()
    with autocast(cpu):
        assert not torch.is_autocast_enabled("cpu")


def test_rng_state_round_trips():
    state = rng_state()
    first = torch.rand(3)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), first)


def test_place_reads_torchrun_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert place() == Place() and place().is_main and not place().is_distributed
    assert join_group("gloo") is False  # alone: nothing to join
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert place() == Place(3, 4, 1) and not place().is_main and place().is_distributed
