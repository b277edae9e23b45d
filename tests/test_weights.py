"""crashsafe.weights: the one reader of weights files into state dicts, never running code."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from crashsafe.weights import WeightsError, read_state_dict

STATE = {"conv.weight": torch.arange(6.0).reshape(2, 3), "conv.bias": torch.ones(2)}


def assert_same(state: dict, expected: dict) -> None:
    assert set(state) == set(expected)
    assert all(torch.equal(state[key], expected[key]) for key in expected)


def test_safetensors_and_torch_files_read_to_the_same_state(tmp_path):
    save_file(STATE, tmp_path / "w.safetensors")
    torch.save(STATE, tmp_path / "w.pth")
    torch.save({"state_dict": STATE, "epoch": 3}, tmp_path / "wrapped.pt")
    for name in ("w.safetensors", "w.pth", "wrapped.pt"):
        assert_same(read_state_dict(tmp_path / name), STATE)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "nothing.safetensors")


class _RunsCode:
    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.parametrize("name, content", [
    ("garbage.safetensors", b"not a state dict"),
    ("garbage.pth", b"not a state dict"),
    ("code.pth", None),
])
def test_unreadable_files_and_pickled_code_are_refused_with_the_advice(tmp_path, capsys, name,
                                                                     content):
    if content is None:
        torch.save({"w": _RunsCode()}, tmp_path / name)
    else:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(WeightsError, match="(?s)could not be read as a state dict.*use this"):
        read_state_dict(tmp_path / name, advice="use this")
    assert "pickled code ran" not in capsys.readouterr().out


def test_a_file_without_a_state_dict_of_tensors_is_refused(tmp_path):
    torch.save([torch.ones(2)], tmp_path / "list.pth")
    torch.save({"w": torch.ones(2), "step": 3}, tmp_path / "mixed.pth")
    for name in ("list.pth", "mixed.pth"):
        with pytest.raises(WeightsError, match="does not hold a state dict of tensors"):
            read_state_dict(tmp_path / name)
