"""Every detector kind is a scikit-learn estimator: ``clone``, ``get_params`` and
``set_params`` work, ``GridSearchCV`` can tune one, scoring leaves process-wide state (torch's
thread count, the global RNGs) as it found it, and the registry's defaults are the
constructors'."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.base import clone, is_classifier
from sklearn.model_selection import GridSearchCV

from forensics.cli import main as cli_main
from forensics.detectors import (DETECTOR_KINDS, create_detector, detector_class, list_detectors,
                                 load_detector)
from forensics.detectors.general import general_detector_path
from forensics.detectors.registry import constructor_defaults
from test_spectral_detector import corpus

# Small, quick settings of every built-in kind.
QUICK = {
    "spectral": {"n_bins": 16},
    "oneclass": {},
    "ensemble": {"members": "spectral:fft,spectral:npr"},
    "cnn": {"backbone": "test_efficientnet", "pretrained": False, "crop_size": 32,
            "batch_size": 16, "epochs": 1, "progress": False, "threads": 1},
}


@pytest.fixture(scope="module")
def data():
    return corpus(0, 16, [(32, 32)]), corpus(1, 8, [(32, 32)])


@pytest.fixture(scope="module")
def fitted(data):
    """A fitted detector of every built-in kind, and the shipped general detector."""
    (x, y), (xv, yv) = data
    detectors = {kind: create_detector(kind, **params).fit(x, y, val_images=xv, val_labels=yv)
                 for kind, params in QUICK.items()}
    detectors["general"] = load_detector(general_detector_path())
    return detectors


def test_every_listed_kind_is_covered():
    assert set(QUICK) <= set(list_detectors())
    assert {kind for kind in list_detectors() if not kind.startswith("test_")} == set(QUICK)


@pytest.mark.parametrize("kind", sorted(QUICK))
def test_clone_of_a_new_detector_has_equal_params(kind):
    detector = create_detector(kind, **QUICK[kind])
    copied = clone(detector)
    assert copied is not detector and type(copied) is type(detector)
    assert copied.get_params() == detector.get_params()
    assert is_classifier(copied)


@pytest.mark.parametrize("kind", [*sorted(QUICK), "general"])
def test_clone_of_a_fitted_detector_is_unfitted_with_equal_params(fitted, kind):
    detector = fitted[kind]
    copied = clone(detector)
    assert copied.get_params() == detector.get_params()
    assert not hasattr(copied, "threshold_") and hasattr(detector, "threshold_")
    assert not [name for name in vars(copied) if name.endswith("_")]


@pytest.mark.parametrize("kind", sorted(QUICK))
def test_get_and_set_params_round_trip(kind):
    detector = create_detector(kind)
    params = detector.get_params()
    assert detector.set_params(**params) is detector and detector.get_params() == params
    name = next(iter(params))
    detector.set_params(**{name: "changed"})
    assert detector.get_params()[name] == "changed"
    assert getattr(detector, name) == "changed"  # stored unchanged, under its own name


@pytest.mark.parametrize("kind", sorted(QUICK))
def test_set_params_of_an_unknown_name_raises(kind):
    with pytest.raises(ValueError, match="no_such_param"):
        create_detector(kind).set_params(no_such_param=1)


@pytest.mark.parametrize("kind", ["cnn", "ensemble"])
def test_train_state_dir_is_a_constructor_parameter_bundles_leave_out(kind, tmp_path):
    detector = create_detector(kind, train_state_dir=tmp_path)
    assert detector.get_params()["train_state_dir"] == tmp_path
    assert "train_state_dir" not in detector.resolved_params()
    assert clone(detector).train_state_dir == tmp_path


@pytest.mark.parametrize("kind", [*sorted(QUICK), "general"])
def test_predict_leaves_process_wide_state_as_it_found_it(fitted, data, kind):
    images = data[1][0][:4]
    detector = fitted[kind]
    before = torch.get_num_threads()
    torch.set_num_threads(2 if before == 1 else before)  # differs from the cnn's threads=1
    try:
        threads = torch.get_num_threads()
        numpy_rng, torch_rng = np.random.get_state(), torch.get_rng_state()
        detector.predict(images)
        detector.predict_proba(images)
        assert torch.get_num_threads() == threads
        assert torch.equal(torch.get_rng_state(), torch_rng)
        after = np.random.get_state()
        assert after[0] == numpy_rng[0] and np.array_equal(after[1], numpy_rng[1])
    finally:
        torch.set_num_threads(before)


def test_grid_search_tunes_a_detector_on_a_list_of_images(data):
    (x, y), _ = data
    search = GridSearchCV(create_detector("spectral", n_bins=16),
                          {"classifier": ["logreg", "svm"]}, cv=2).fit(x, y)
    assert search.best_params_["classifier"] in ("logreg", "svm")
    assert search.best_estimator_.predict(x).shape == (len(x),)


@pytest.mark.parametrize("kind", sorted(DETECTOR_KINDS))
def test_registry_defaults_are_the_constructor_defaults(kind):
    entry = DETECTOR_KINDS[kind]
    cls = detector_class(kind)
    assert entry.class_path == f"{cls.__module__}:{cls.__qualname__}"
    assert dict(entry.defaults) == constructor_defaults(cls) == cls().get_params()
    assert entry.description and "\n" not in entry.description
    assert set(entry.notes) <= set(entry.defaults)  # a note explains a parameter that exists


def test_cli_lists_every_kind_with_description_and_defaults(capsys):
    assert cli_main(["detector", "list", "--json"]) == 0
    listed = {row["kind"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(listed) == set(DETECTOR_KINDS)
    for kind, row in listed.items():
        assert row["description"] == DETECTOR_KINDS[kind].description
        assert row["defaults"] == json.loads(json.dumps(dict(DETECTOR_KINDS[kind].defaults)))
    assert cli_main(["detector", "list"]) == 0
    text = capsys.readouterr().out
    assert all(f"{kind}: {DETECTOR_KINDS[kind].description}" in text for kind in QUICK)
    assert "    n_bins = 64" in text
    assert "    p_blur = null  # None: 0.5 for input rgb, 0 for npr" in text
    assert listed["cnn"]["notes"]["rot90"] == DETECTOR_KINDS["cnn"].notes["rot90"]


def test_listing_kinds_imports_no_kind():
    code = ("import sys; from forensics.cli import main; main(['detector', 'list']); "
            "print(sorted(m for m in ('torch', 'timm', 'forensics.detectors.cnn', "
            "'forensics.detectors.spectral') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines()[-1] == "[]"
