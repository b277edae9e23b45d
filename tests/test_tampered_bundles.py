"""Tampered model files (issue 7, item 3) refused through the command line.

test_spectral_detector.py, test_ensemble.py and test_generators_dcgan.py check that the loaders
raise; here each tampered detector bundle or generator checkpoint goes through `forensics scan`
or `forensics zoo sample`, which must exit 2 with one line naming the folder and what to do,
no traceback, and nothing executed from a pickle payload."""

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from bundle_support import flip_byte, rehash_bundle, rehash_checkpoint
from conftest import run_cli
from crashsafe.images import save_png
from forensics.detectors import create_detector
from generators.checkpoint import WEIGHTS_FILE, save_checkpoint
from generators.registry import create_generator
from generators.trainer import train_gan
from generators_support import TINY, one_thread, write_blob_images  # noqa: F401 (fixture)
from test_spectral_detector import corpus

ADVICE = ("retrain", "re-create", "restore", "upgrade", "train one", "get an intact copy")


class TouchOnUnpickle:
    """Unpickling this creates a marker file: it stands for arbitrary code in a payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def live_payload(marker: Path) -> bytes:
    """A pickle that creates ``marker`` when loaded; checked to be live, then reset."""
    payload = pickle.dumps({"weights": TouchOnUnpickle(marker)})
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()
    return payload


def assert_refused(proc, folder: Path) -> None:
    """Exit 2, one line on stderr naming the folder and what to do, no traceback."""
    message = proc.stderr.strip()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "\n" not in message, message
    assert message.startswith("forensics: error: ") and str(folder) in message, message
    assert any(word in message for word in ADVICE), message


# --- detector bundles ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A spectral and an ensemble bundle, and one image to scan."""
    root = tmp_path_factory.mktemp("bundles")
    (x, y), (xv, yv) = corpus(0, 30, [(32, 32)]), corpus(1, 20, [(32, 32)])
    create_detector("spectral").fit(x, y, val_images=xv, val_labels=yv).save(root / "spectral")
    create_detector("ensemble", members="spectral:fft,spectral:npr").fit(
        x, y, val_images=xv, val_labels=yv).save(root / "ensemble")
    save_png(x[0], root / "image.png")
    proc = run_cli("scan", root / "image.png", "--detector", root / "spectral", "--out",
                   root / "ok.csv", "-q")
    assert "scanned 1 files" in proc.stdout  # the untampered bundle works
    return root


def edit_manifest(folder: Path, edit) -> None:
    manifest = json.loads((folder / "detector.json").read_text())
    edit(manifest)
    (folder / "detector.json").write_text(json.dumps(manifest))


def escape_parent(bundle: Path) -> None:
    shutil.copyfile(bundle / "weights.npz", bundle.parent / "x.npz")
    edit_manifest(bundle, lambda m: m.update(arrays=["../x.npz"]))


def escape_absolute(bundle: Path) -> None:
    shutil.copyfile(bundle / "weights.npz", bundle.parent / "abs.npz")
    edit_manifest(bundle, lambda m: m.update(arrays=[str(bundle.parent / "abs.npz")]))


def newer_version(bundle: Path) -> None:
    edit_manifest(bundle, lambda m: m.update(format_version=m["format_version"] + 1))


def wrong_shapes(bundle: Path) -> None:
    with np.load(bundle / "weights.npz") as npz:
        arrays = {key: np.zeros(npz[key].shape + (2,), npz[key].dtype) for key in npz.files}
    np.savez(bundle / "weights.npz", **arrays)
    rehash_bundle(bundle)  # consistent forgeries: the loader's own checks must refuse them


def pickle_safetensors(bundle: Path) -> None:
    (bundle / "extra.safetensors").write_bytes(live_payload(bundle.parent / "payload-ran"))
    edit_manifest(bundle, lambda m: m["arrays"].append("extra.safetensors"))
    rehash_bundle(bundle)


def pickle_npz(bundle: Path) -> None:
    (bundle / "weights.npz").write_bytes(live_payload(bundle.parent / "payload-ran"))
    rehash_bundle(bundle)


def ensemble_member_escapes(bundle: Path) -> None:
    shutil.copytree(bundle / "members" / "spectral-fft", bundle.parent / "elsewhere")

    def edit(manifest):
        manifest["params"]["members"][0]["name"] = "../../elsewhere"
    edit_manifest(bundle, edit)


def ensemble_member_absolute(bundle: Path) -> None:
    shutil.copytree(bundle / "members" / "spectral-fft", bundle.parent / "elsewhere")

    def edit(manifest):
        manifest["params"]["members"][0]["name"] = str(bundle.parent / "elsewhere")
    edit_manifest(bundle, edit)


def ensemble_member_missing(bundle: Path) -> None:
    shutil.rmtree(bundle / "members" / "spectral-npr")


DETECTOR_TAMPERS = {
    "array path ../x.npz": ("spectral", escape_parent),
    "absolute array path": ("spectral", escape_absolute),
    "missing weights.npz": ("spectral", lambda b: (b / "weights.npz").unlink()),
    "missing detector.json": ("spectral", lambda b: (b / "detector.json").unlink()),
    "flipped byte in weights.npz": ("spectral", lambda b: flip_byte(b / "weights.npz")),
    "flipped byte in a member's weights": (
        "ensemble", lambda b: flip_byte(b / "members" / "spectral-npr" / "weights.npz", 0.9)),
    "flipped byte in a member's detector.json": (
        "ensemble", lambda b: flip_byte(b / "members" / "spectral-fft" / "detector.json", 0.3)),
    "newer format_version": ("spectral", newer_version),
    "wrong array shapes": ("spectral", wrong_shapes),
    "pickle in .safetensors": ("spectral", pickle_safetensors),
    "pickle in .npz": ("spectral", pickle_npz),
    "ensemble member ../../elsewhere": ("ensemble", ensemble_member_escapes),
    "ensemble member absolute path": ("ensemble", ensemble_member_absolute),
    "ensemble member missing": ("ensemble", ensemble_member_missing),
}


@pytest.mark.parametrize("case", sorted(DETECTOR_TAMPERS))
def test_scan_refuses_a_tampered_bundle(pristine, tmp_path, case):
    kind, tamper = DETECTOR_TAMPERS[case]
    bundle = tmp_path / kind
    shutil.copytree(pristine / kind, bundle)
    tamper(bundle)
    proc = run_cli("scan", pristine / "image.png", "--detector", bundle, "--out",
                   tmp_path / "out.csv", "-q", check=False, timeout=120)
    assert_refused(proc, bundle)
    assert not (tmp_path / "payload-ran").exists()
    assert not (tmp_path / "out.csv").exists()


# --- generator checkpoints -------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A 2-step 16 px dcgan run (ngf = ndf = 8)."""
    root = tmp_path_factory.mktemp("gan")
    paths = write_blob_images(root / "blobs", n=8, size=16)
    train_gan("dcgan", paths, root / "run", steps=2, seed=0, device="cpu",
              config_overrides=TINY, progress=False)
    return root / "run"


def weights_pickle(run: Path) -> None:
    (run / WEIGHTS_FILE).write_bytes(live_payload(run.parent / "payload-ran"))
    rehash_checkpoint(run)


def config_newer(run: Path) -> None:
    document = json.loads((run / "config.json").read_text())
    document["version"] += 1
    (run / "config.json").write_text(json.dumps(document))


def weights_wrong_shapes(run: Path) -> None:
    other = dict(TINY, ngf=4)
    other.pop("batch_size")
    save_checkpoint(run.parent / "other", create_generator("dcgan", **other), step=0)
    shutil.copyfile(run.parent / "other" / WEIGHTS_FILE, run / WEIGHTS_FILE)
    rehash_checkpoint(run)


CHECKPOINT_TAMPERS = {
    "weights.safetensors is a pickle": weights_pickle,
    "config.json from a newer version": config_newer,
    "weights of the wrong shapes": weights_wrong_shapes,
    "missing weights.safetensors": lambda run: (run / WEIGHTS_FILE).unlink(),
    "flipped byte in weights.safetensors": lambda run: flip_byte(run / WEIGHTS_FILE),
    "missing config.json": lambda run: (run / "config.json").unlink(),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_TAMPERS))
def test_zoo_sample_refuses_a_tampered_checkpoint(run_dir, tmp_path, case):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    CHECKPOINT_TAMPERS[case](run)
    proc = run_cli("zoo", "sample", run, "--n", "2", "--out", tmp_path / "samples",
                   "--device", "cpu", "-q", check=False, timeout=120)
    assert_refused(proc, run)
    assert not (tmp_path / "payload-ran").exists()
    assert not list(tmp_path.glob("samples/*.png"))
