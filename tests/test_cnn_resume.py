"""Resumable CNN training (issue 7 item 2): a fit cut after any epoch, or inside any rename of
its state save, and resumed from its state folder equals an uninterrupted fit bit for bit on the
CPU; a state for other data or parameters is refused. The real kill -9 of the console script is
in test_kill_resume.py."""

import json
import os

import numpy as np
import pytest
import torch

import forensics.detectors.cnn as cnn
from conftest import Crash, crash_after
from crashsafe.tensors import decode_state, encode_state
from forensics.cli import main
from forensics.detectors import create_detector
from forensics.detectors.train_state import (STATE_JSON, STATE_TENSORS, TrainStateError,
                                             discard_train_state)
from forensics.training import train_state_dir
from test_spectral_detector import corpus, write_real_fake_folders

# A tiny random-init network, two steps an epoch, one thread: a fit takes a fraction of a second.
TINY = {"backbone": "test_efficientnet", "pretrained": False, "crop_size": 32, "batch_size": 16,
        "steps_per_epoch": 2, "threads": 1, "progress": False}
EPOCHS = 3


@pytest.fixture(scope="module")
def data():
    return corpus(0, 24, [(32, 32)]), corpus(1, 12, [(32, 32), (40, 24)])


def fit(data, state_dir=None, **params):
    (x, y), (xv, yv) = data
    detector = create_detector("cnn", **{**TINY, "epochs": EPOCHS, "patience": EPOCHS, **params},
                               train_state_dir=state_dir)
    return detector.fit(x, y, val_images=xv, val_labels=yv)


@pytest.fixture(scope="module")
def whole(data):
    return fit(data)


def assert_same(got, expected, data) -> None:
    """Same weights, probabilities, threshold, calibration and history."""
    a, b = got.network_.state_dict(), expected.network_.state_dict()
    assert sorted(a) == sorted(b)
    for key in b:
        assert torch.equal(a[key], b[key]), key
    images = data[0][0] + data[1][0]
    np.testing.assert_array_equal(got.predict_proba(images), expected.predict_proba(images))
    assert got.threshold_ == expected.threshold_ and got.calibration_ == expected.calibration_
    for key in ("history", "best_epoch", "train_crop", "stopped_early"):
        assert got.training_info_[key] == expected.training_info_[key], key


def cut_after_epoch(monkeypatch, epoch: int) -> None:
    """The process 'dies' right after the state of ``epoch`` is saved."""
    real = cnn.save_train_state

    def save_then_die(folder, state, **kwargs):
        real(folder, state, **kwargs)
        if state["epoch"] == epoch:
            raise Crash()

    monkeypatch.setattr(cnn, "save_train_state", save_then_die)


@pytest.mark.parametrize("epoch", range(1, EPOCHS + 1))
def test_fit_cut_after_an_epoch_resumes_to_the_uninterrupted_result(data, whole, tmp_path,
                                                                    monkeypatch, epoch):
    state = tmp_path / "state"
    with monkeypatch.context() as patch:
        cut_after_epoch(patch, epoch)
        with pytest.raises(Crash):
            fit(data, state)
    assert sorted(p.name for p in state.iterdir()) == [STATE_JSON, STATE_TENSORS]
    resumed = fit(data, state)
    assert resumed.training_info_["resumed_after_epoch"] == epoch
    assert_same(resumed, whole, data)
    assert (state / STATE_JSON).is_file()  # the caller removes it once the bundle is saved


def test_early_stopped_fit_resumes_to_the_same_stop(data, tmp_path, monkeypatch):
    """patience=1 on 6 epochs: the run stops at the first epoch that does not beat the best
    one (the 4th); cut after every epoch up to that stop, each time resumed, it ends the same."""
    params = {"epochs": 6, "patience": 1}
    expected = fit(data, **params)
    stop = len(expected.training_info_["history"])
    assert expected.training_info_["stopped_early"] and stop > 2
    state = tmp_path / "state"
    for epoch in range(1, stop + 1):
        with monkeypatch.context() as patch:
            cut_after_epoch(patch, epoch)
            with pytest.raises(Crash):
                fit(data, state, **params)
    resumed = fit(data, state, **params)
    assert resumed.training_info_["resumed_after_epoch"] == stop  # nothing left to train
    assert_same(resumed, expected, data)


def test_fit_cut_inside_any_rename_of_its_state_saves_resumes_exactly(data, whole, tmp_path,
                                                                     monkeypatch):
    """Every os.replace of the three state saves (file writes, moves out of .pending) in turn is
    where the process dies: the resume finds the previous state or the new one, whole."""
    calls = []
    with monkeypatch.context() as patch:
        real = os.replace
        patch.setattr(os, "replace", lambda *a, **k: (calls.append(a), real(*a, **k))[1])
        fit(data, tmp_path / "count")
    assert len(calls) >= 3 * 4  # per save: 2 files + marker written, 2 moved
    for k in range(len(calls)):
        state = tmp_path / f"state{k}"
        with monkeypatch.context() as patch:
            crash_after(patch, os, "replace", k)
            with pytest.raises(Crash):
                fit(data, state)
        assert_same(fit(data, state), whole, data)
        assert not list(state.rglob("*.tmp")) and not (state / ".pending").exists()


def test_resume_with_other_data_or_parameters_is_refused(data, tmp_path, monkeypatch):
    state = tmp_path / "state"
    with monkeypatch.context() as patch:
        cut_after_epoch(patch, 1)
        with pytest.raises(Crash):
            fit(data, state)
    (x, y), val = data
    other = [image.copy() for image in x]
    other[5][0, 0, 0] ^= 1  # one bit of one pixel
    with pytest.raises(TrainStateError, match="other training or validation images"):
        fit(((other, y), val), state)
    with pytest.raises(TrainStateError, match=r"parameters \(lr 0.001 then, 0.002 now\).*"
                                              "without --resume"):
        fit(data, state, lr=0.002)
    # The progress bar (and threads) change how it runs, not what it learns: resumable.
    assert fit(data, state, progress=True).training_info_["resumed_after_epoch"] == 1


def test_unreadable_state_is_refused_with_the_remedy(data, tmp_path, monkeypatch):
    state = tmp_path / "state"
    with monkeypatch.context() as patch:
        cut_after_epoch(patch, 1)
        with pytest.raises(Crash):
            fit(data, state)
    tensors = state / STATE_TENSORS
    tensors.write_bytes(tensors.read_bytes()[:1000])
    with pytest.raises(TrainStateError, match="does not match the SHA-256.*delete that folder"):
        fit(data, state)
    (state / STATE_JSON).write_text("{")
    with pytest.raises(TrainStateError, match="not valid JSON"):
        fit(data, state)
    discard_train_state(state)
    assert not state.exists()
    fit(data, state)  # no state: from scratch


def test_state_tree_round_trips_with_key_types():
    tree = {"optimiser": {"state": {0: {"step": torch.tensor(3.0)}},
                          "param_groups": [{"betas": (0.9, 0.999), "params": [0], "x": None}]},
            "queue": np.arange(4), "rng": np.random.default_rng(1).bit_generator.state}
    tensors, skeleton = encode_state(tree)
    back = decode_state(tensors, json.loads(json.dumps(skeleton)))
    assert back["optimiser"]["param_groups"] == tree["optimiser"]["param_groups"]
    assert list(back["optimiser"]["state"]) == [0]
    assert back["optimiser"]["state"][0]["step"] == 3.0
    np.testing.assert_array_equal(back["queue"], tree["queue"])
    assert back["rng"] == tree["rng"]
    with pytest.raises(TypeError, match="cannot store set"):
        encode_state({"bad": {1}})


def test_ensemble_cnn_member_resumes_from_its_own_state(data, tmp_path, monkeypatch):
    members = ["spectral:fft", {"name": "cnn", "kind": "cnn",
                                "params": {**TINY, "epochs": EPOCHS, "patience": EPOCHS}}]
    (x, y), (xv, yv) = data

    def fit_ensemble(state_dir=None):
        detector = create_detector("ensemble", members=members, train_state_dir=state_dir)
        return detector.fit(x, y, val_images=xv, val_labels=yv)

    expected = fit_ensemble()
    state = tmp_path / "state"
    with monkeypatch.context() as patch:
        cut_after_epoch(patch, 2)
        with pytest.raises(Crash):
            fit_ensemble(state)
    assert (state / "members" / "cnn" / STATE_JSON).is_file()
    resumed = fit_ensemble(state)
    assert resumed.members_["cnn"].training_info_["resumed_after_epoch"] == 2
    images = x + xv
    np.testing.assert_array_equal(resumed.predict_proba(images), expected.predict_proba(images))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return write_real_fake_folders(tmp_path_factory.mktemp("resume"), 12, 32, 3, "upsampler")


def cli(*args):
    return main([str(a) for a in args])


CNN_SET = [item for key, value in {**TINY, "epochs": EPOCHS, "patience": EPOCHS}.items()
           for item in ("--set", f"{key}={json.dumps(value)}")]


def test_cli_resume_notices_and_discarding(folders, tmp_path, capsys, monkeypatch):
    out = tmp_path / "bundle"
    args = ["detector", "train", "--corpus", folders, "--out", out, "-q"]
    assert cli(*args, "--kind", "spectral", "--resume") == 0
    assert "fits in seconds, so it is simply trained again" in capsys.readouterr().out

    assert cli(*args, "--kind", "cnn", *CNN_SET, "--resume") == 0
    assert "no training state in" in capsys.readouterr().out
    assert not train_state_dir(out).exists()  # removed once the bundle is saved

    # A state of other parameters: refused with --resume, discarded without.
    with monkeypatch.context() as patch:
        cut_after_epoch(patch, 1)
        with pytest.raises(Crash):
            cli(*args, "--kind", "cnn", *CNN_SET, "--set", "lr=0.01")
    assert (train_state_dir(out) / STATE_JSON).is_file()
    capsys.readouterr()
    assert cli(*args, "--kind", "cnn", *CNN_SET, "--resume") == 2
    error = capsys.readouterr().err
    assert "other detector parameters (lr 0.01 then, 0.001 now)" in error
    assert error.count("\n") == 1
    assert cli(*args, "--kind", "cnn", *CNN_SET) == 0
    assert "discarding the training state of an interrupted run" in capsys.readouterr().out
    assert not train_state_dir(out).exists()
    assert not list(out.rglob("*.tmp"))
