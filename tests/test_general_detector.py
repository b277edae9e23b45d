"""The shipped general detector: where it comes from, that nothing of ../shared trained it, and
that the commands use it when --detector is left out."""

import csv
import hashlib
import json
from pathlib import Path

import pytest

from conftest import run_cli
from crashsafe.images import save_png
from forensics.bundled import SOURCE_PHOTOS
from forensics.detectors import load_detector
from forensics.detectors.general import general_detector_path
from forensics.general_recipe import GeneralRecipe, build_general_detector
from test_spectral_detector import corpus

SHARED = Path(__file__).resolve().parents[2] / "shared"
TINY = GeneralRecipe(upsamplers=("nearest", "convT4"), simulator_steps=3, crops_per_photo=1,
                     crop_sizes=(64, 96),
                     detector={"input": "npr", "backbone": "npr_resnet", "crop_size": 48,
                               "tile_size": 96, "batch_size": 8, "epochs": 1,
                               "steps_per_epoch": 2})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_shipped_bundle_loads_and_is_small():
    folder = general_detector_path()
    detector = load_detector(folder)  # every file checked against its SHA-256
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size <= 30 * 2**20, f"{size / 2**20:.1f} MB"
    assert detector.training_info_["recipe"]["name"] == "general"


def test_every_training_source_is_a_bundled_photo_and_none_is_from_shared():
    recipe = load_detector(general_detector_path()).training_info_["recipe"]
    bundled = {sha256(photo.path()) for photo in SOURCE_PHOTOS}
    sources = recipe["sources"]
    assert sources and {s["sha256"] for s in sources} <= bundled
    assert all("shared" not in Path(s["file"]).parts for s in sources)
    # The val photos (calibration, threshold) are bundled photos too, never an evaluation set.
    assert {s["split"] for s in sources} == {"train", "val", "test"}


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} (the evaluation sets, wild-dev among "
                    "them) is not beside this checkout, so there is nothing to compare with")
def test_no_training_source_is_a_file_of_the_evaluation_sets():
    sources = load_detector(general_detector_path()).training_info_["recipe"]["sources"]
    bundled = {sha256(photo.path()) for photo in SOURCE_PHOTOS}
    evaluation = {sha256(p) for p in SHARED.rglob("*") if p.is_file()}
    assert not evaluation & bundled
    listed = SHARED / "wild-dev" / "files.csv"
    with listed.open(newline="") as handle:
        wild = {row["sha256"] for row in csv.DictReader(handle)}
    assert wild and not wild & {s["sha256"] for s in sources}


def test_scan_uses_it_without_a_detector_option(tmp_path):
    images = corpus(0, 2, [(80, 96)])[0]
    for k, image in enumerate(images):
        save_png(image, tmp_path / "in" / f"{k}.png")
    proc = run_cli("scan", tmp_path / "in", "--out", tmp_path / "out.csv", "-q")
    assert "scanned 4 files" in proc.stdout
    assert str(general_detector_path()) not in proc.stderr


def test_the_recipe_runs_end_to_end_and_records_its_sources(tmp_path):
    detector = build_general_detector(tmp_path / "bundle", tmp_path / "work", recipe=TINY,
                                      progress=False)
    recipe = json.loads((tmp_path / "bundle" / "detector.json").read_text())["training"]["recipe"]
    assert recipe == json.loads(json.dumps(detector.training_info_["recipe"]))
    assert set(recipe["simulators"]) == {"autoencoder-nearest-x4", "autoencoder-convT4-x4"}
    assert len(recipe["sources"]) == len(SOURCE_PHOTOS)
    assert set(recipe["minutes"]) == {"simulators", "pairs", "detector"}
    assert load_detector(tmp_path / "bundle").threshold_ == pytest.approx(detector.threshold_)
