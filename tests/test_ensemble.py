"""Ensemble: members trained on train, a stacker fit on validation, a bundle of sub-bundles."""

import json
import os
import pickle
import shutil

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from bundle_support import rehash_bundle
from conftest import Crash, crash_after
from crashsafe.files import STAGING_DIR
from forensics.detectors import BundleError, create_detector, load_detector
from forensics.detectors.ensemble import EnsembleDetector, parse_member_specs
from forensics.detectors.spectral import SpectralDetector
from test_spectral_detector import corpus

MEMBERS = [
    {"name": "fft", "kind": "spectral", "params": {"features": "fft", "n_bins": 16}},
    {"name": "npr-gbm", "kind": "spectral",
     "params": {"features": "npr", "n_bins": 16, "classifier": "gbm",
                "classifier_params": {"max_iter": 20}}},
]


@pytest.fixture(scope="module")
def data():
    return {"train": corpus(20, 30, [(32, 32)]), "val": corpus(21, 20, [(32, 32)]),
            "test": corpus(22, 20, [(48, 48), (37, 53)])}


@pytest.fixture(scope="module")
def ensemble(data):
    (x, y), (xv, yv) = data["train"], data["val"]
    return create_detector("ensemble", members=MEMBERS).fit(x, y, val_images=xv, val_labels=yv)


@pytest.fixture
def bundle(ensemble, tmp_path):
    return ensemble.save(tmp_path / "ensemble")


def test_member_specs_from_the_command_line_form():
    specs = parse_member_specs("spectral:fft, spectral:fft+npr,spectral")
    assert [(s.name, s.kind, s.params) for s in specs] == [
        ("spectral-fft", "spectral", {"features": "fft"}),
        ("spectral-fft+npr", "spectral", {"features": "fft+npr"}),
        ("spectral", "spectral", {}),
    ]


@pytest.mark.parametrize("members, message", [
    ("spectral:fft,spectral:fft", "unique"),
    ("vit:large", "not a registered detector kind"),
    ("ensemble", "not a registered detector kind"),
    ([{"name": "../x", "kind": "spectral", "params": {}}], "plain name"),
    ([{"name": "x", "kind": "spectral"}], "dict of name, kind and params"),
])
def test_bad_member_specs_are_refused(members, message):
    with pytest.raises(ValueError, match=message):
        parse_member_specs(members)


def test_stacks_members_and_beats_chance(ensemble, data):
    x, y = data["test"]
    scores, members = ensemble.predict_proba_with_members(x)
    assert set(members) == {"fft", "npr-gbm"}
    assert all(isinstance(m, SpectralDetector) for m in ensemble.members_.values())
    assert average_precision_score(y, scores) > 0.8
    assert np.array_equal(scores, ensemble.predict_proba(x))
    for name, member_scores in ensemble.predict_member_scores(x).items():
        assert np.array_equal(member_scores, ensemble.members_[name].predict_proba(x))
    assert ensemble.calibration_["n_val"] == 40
    assert set(ensemble.calibration_["weights"]) == {"fft", "npr-gbm"}


def test_needs_validation_data(data):
    with pytest.raises(ValueError, match="validation"):
        create_detector("ensemble", members=MEMBERS).fit(*data["train"])


def test_round_trip_holds_member_bundles(ensemble, bundle, data):
    assert sorted(p.name for p in (bundle / "members").iterdir()) == ["fft", "npr-gbm"]
    assert (bundle / "members" / "fft" / "detector.json").is_file()
    loaded = load_detector(bundle)
    assert isinstance(loaded, EnsembleDetector)
    x = data["test"][0]
    assert np.array_equal(loaded.predict_proba(x), ensemble.predict_proba(x))
    assert loaded.calibration_ == ensemble.calibration_
    assert load_detector(bundle / "members" / "fft").kind == "spectral"  # usable alone


def edit_manifest(folder, **changes):
    manifest = json.loads((folder / "detector.json").read_text())
    manifest.update(changes)
    (folder / "detector.json").write_text(json.dumps(manifest))


def test_refuses_member_names_that_leave_the_bundle(bundle):
    members = json.loads((bundle / "detector.json").read_text())["params"]["members"]
    members[0]["name"] = "../../elsewhere"
    edit_manifest(bundle, params={"members": members, "C": 1.0})
    with pytest.raises(BundleError, match="plain name"):
        load_detector(bundle)


def test_refuses_a_symlinked_member(bundle, tmp_path):
    outside = tmp_path / "outside"
    shutil.move(bundle / "members" / "fft", outside)
    (bundle / "members" / "fft").symlink_to(outside, target_is_directory=True)
    with pytest.raises(BundleError, match="leaves the bundle folder"):
        load_detector(bundle)


def test_refuses_a_member_of_another_kind(bundle):
    edit_manifest(bundle / "members" / "fft", kind="ensemble")
    with pytest.raises(BundleError):
        load_detector(bundle)


def test_refuses_missing_member_and_bad_stacker(bundle):
    np.savez(bundle / "stacker.npz", coef=np.zeros(5), intercept=np.zeros(()))
    with pytest.raises(BundleError, match="stacker.npz"):
        load_detector(bundle)
    shutil.rmtree(bundle / "members" / "npr-gbm")
    with pytest.raises(BundleError):
        load_detector(bundle)


class _TouchOnUnpickle:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (self.marker,))


def test_refuses_a_pickle_payload_in_a_member(bundle, tmp_path):
    marker = tmp_path / "payload-ran"
    (bundle / "members" / "npr-gbm" / "weights.npz").write_bytes(
        pickle.dumps(_TouchOnUnpickle(marker)))
    with pytest.raises(BundleError, match="members/npr-gbm/weights.npz does not match the SHA"):
        load_detector(bundle)
    rehash_bundle(bundle / "members" / "npr-gbm")  # forged checksums, member's then the
    rehash_bundle(bundle)  # ensemble's: the member's loader must refuse the pickle itself
    with pytest.raises(BundleError, match="refused") as error:
        load_detector(bundle)
    assert "npr-gbm" in str(error.value) and not marker.exists()


def test_scan_writes_member_columns(bundle, data, tmp_path):
    from forensics.cli import main
    from crashsafe.images import save_png

    folder = tmp_path / "scan"
    for i, image in enumerate(data["test"][0][:3]):
        save_png(image, folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    assert main(["scan", str(folder), "--detector", str(bundle), "--out",
                 str(tmp_path / "r.jsonl"), "--format", "jsonl", "-q"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    good = [r for r in rows if not r["error"]]
    assert len(good) == 3 and all(0 <= r["p_fake_fft"] <= 1 for r in good)
    assert all("p_fake_npr-gbm" in r for r in rows)
    assert [r["p_fake_fft"] for r in rows if r["error"]] == [None]


def test_a_crash_anywhere_in_a_save_leaves_the_old_or_the_new_bundle(ensemble, data, tmp_path,
                                                                     monkeypatch):
    """Save ensemble B over ensemble A, dying at each rename of the save (B's member
    sub-bundles included); the next load must score exactly like A or exactly like B."""
    (x, y), (xv, yv) = data["train"], data["val"]
    other = create_detector("ensemble", members=MEMBERS).fit(xv, yv, val_images=x, val_labels=y)
    test = data["test"][0]
    expected = {"old": ensemble.predict_proba(test), "new": other.predict_proba(test)}
    assert not np.array_equal(expected["old"], expected["new"])
    renames = []
    monkeypatch.setattr(os, "replace", lambda *a, real=os.replace: renames.append(a) or real(*a))
    other.save(tmp_path / "count")
    monkeypatch.undo()
    seen = []
    for calls in range(len(renames)):
        folder = ensemble.save(tmp_path / f"cut{calls}")
        crash_after(monkeypatch, os, "replace", calls)
        with pytest.raises(Crash):
            other.save(folder)
        monkeypatch.undo()
        scores = load_detector(folder).predict_proba(test)  # finishes or drops the save first
        which = "new" if np.array_equal(scores, expected["new"]) else "old"
        np.testing.assert_array_equal(scores, expected[which])
        assert not (folder / STAGING_DIR).exists() and not list(folder.rglob(".*.tmp"))
        seen.append(which)
    assert seen[0] == "old" and seen[-1] == "new"  # both outcomes occur, old before new
    assert seen == sorted(seen, key=["old", "new"].index)
