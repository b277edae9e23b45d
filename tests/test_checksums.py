"""Integrity by checksum: every weights/arrays file of a detector bundle (each kind), a
generator checkpoint and a detector's training state is listed with its SHA-256 in the JSON
beside it and checked before use, so one flipped bit anywhere in it is refused."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from bundle_support import flip_byte, sha256_of
from forensics.detectors import BundleError, create_detector, load_detector
from forensics.detectors.train_state import (STATE_TENSORS, TrainStateError, load_train_state,
                                             save_train_state)
from generators.checkpoint import (OPTIM_FILE, WEIGHTS_FILE, CheckpointError, load_checkpoint,
                                   load_train_state as load_gan_state, save_checkpoint)
from generators.registry import create_generator
from test_spectral_detector import corpus

WHERE = {"first byte": 0.0, "middle": 0.5, "last byte": 1.0}
KINDS = {
    "spectral": {"kind": "spectral", "features": "fft+npr"},
    "spectral-gbm": {"kind": "spectral", "classifier": "gbm"},
    "cnn": {"kind": "cnn", "backbone": "test_efficientnet", "pretrained": False,
            "crop_size": 32, "batch_size": 16, "epochs": 1, "progress": False},
    "ensemble": {"kind": "ensemble", "members": "spectral:fft,spectral:npr"},
}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """One saved bundle of every kind, trained on a few synthetic images."""
    root = tmp_path_factory.mktemp("kinds")
    (x, y), (xv, yv) = corpus(0, 16, [(32, 32)]), corpus(1, 8, [(32, 32)])
    for name, params in KINDS.items():
        params = dict(params)
        create_detector(params.pop("kind"), **params).fit(
            x, y, val_images=xv, val_labels=yv).save(root / name)
    return root


def weights_files(bundle: Path) -> list[str]:
    """Every file a bundle's detector.json records a SHA-256 for (members' files included)."""
    return sorted(json.loads((bundle / "detector.json").read_text())["sha256"])


def test_every_file_of_every_kind_is_listed_with_its_sha256(bundles):
    for name in KINDS:
        bundle = bundles / name
        listed = json.loads((bundle / "detector.json").read_text())["sha256"]
        on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*")
                   if p.is_file() and p.name not in ("detector.json", "training_curves.png")}
        assert set(listed) >= on_disk, name
        assert all(listed[f] == sha256_of(bundle / f) for f in listed), name
    ensemble = weights_files(bundles / "ensemble")
    assert "members/spectral-fft/detector.json" in ensemble
    assert "members/spectral-npr/weights.npz" in ensemble


@pytest.mark.parametrize("where", sorted(WHERE))
@pytest.mark.parametrize("name", sorted(KINDS))
def test_a_flipped_byte_in_any_weights_file_is_refused(bundles, tmp_path, name, where):
    for relative in weights_files(bundles / name):
        bundle = tmp_path / f"{name}-{relative.replace('/', '_')}"
        shutil.copytree(bundles / name, bundle)
        flip_byte(bundle / relative, WHERE[where])
        with pytest.raises(BundleError, match="does not match the SHA-256"):
            load_detector(bundle)


def test_an_untouched_copy_still_loads(bundles, tmp_path):
    for name in KINDS:
        assert load_detector(bundles / name).threshold_ is not None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run = tmp_path_factory.mktemp("gan") / "run"
    pair = create_generator("dcgan", resolution=16, ngf=4, ndf=4, nz=8)
    optimiser = torch.optim.Adam(pair.generator.parameters())
    save_checkpoint(run, pair, step=1, train_state={"optim": optimiser.state_dict()})
    return run


@pytest.mark.parametrize("where", sorted(WHERE))
@pytest.mark.parametrize("filename", [WEIGHTS_FILE, OPTIM_FILE])
def test_a_flipped_byte_in_a_checkpoint_is_refused(checkpoint, tmp_path, filename, where):
    run = tmp_path / "run"
    shutil.copytree(checkpoint, run)
    document = json.loads((run / "config.json").read_text())
    assert document["files"][filename] == sha256_of(run / filename)
    flip_byte(run / filename, WHERE[where])
    load = load_checkpoint if filename == WEIGHTS_FILE else load_gan_state
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load(run)


@pytest.mark.parametrize("where", sorted(WHERE))
def test_a_flipped_byte_in_a_training_state_is_refused(tmp_path, where):
    fingerprint = {"data": "abc", "params": {"epochs": 2}}
    state = {"weights": torch.arange(64, dtype=torch.float32), "epoch": 1}
    save_train_state(tmp_path, state, fingerprint=fingerprint)
    assert torch.equal(load_train_state(tmp_path, fingerprint)["weights"], state["weights"])
    flip_byte(tmp_path / STATE_TENSORS, WHERE[where])
    with pytest.raises(TrainStateError, match="does not match the SHA-256"):
        load_train_state(tmp_path, fingerprint)
