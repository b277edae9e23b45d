"""Training and evaluation over corpus folders: splits, per-generator pairing, bad files."""

import numpy as np
import pytest

from forensics.corpus import discover_corpus
from forensics.evaluation import evaluate_corpora, evaluation_table
from forensics.images import save_png
from forensics.training import train_detector
from test_spectral_detector import fake_image, real_image


@pytest.fixture(scope="module")
def cnndetection_corpus(tmp_path_factory):
    """Two sets in CNNDetection layout; 'easy' has twice the reals of 'hard'."""
    root = tmp_path_factory.mktemp("cnndet")
    rng = np.random.default_rng(0)
    for name, n_real in (("easy", 60), ("hard", 30)):
        for i in range(n_real):
            save_png(real_image(rng, 32, 32), root / name / "0_real" / f"{i}.png")
        for i in range(30):
            save_png(fake_image(rng, 32, 32), root / name / "1_fake" / f"{i}.png")
    (root / "easy" / "1_fake" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return root


def test_train_then_evaluate_per_generator(cnndetection_corpus, tmp_path):
    det = train_detector("spectral", [cnndetection_corpus], tmp_path / "bundle", progress=False)
    assert det.training_info_["generators"] == ["easy", "hard"]
    assert all("broken.png" in f["path"] for f in det.training_info_["skipped_files"])
    corpus = discover_corpus(cnndetection_corpus)
    result = evaluate_corpora(det, [corpus], split="all", progress=False)
    by_gen = {g["generator"]: g for g in result["per_generator"]}
    # each set's fakes are paired with that set's own reals, not all reals
    assert by_gen["easy"]["n_real"] == 60 and by_gen["hard"]["n_real"] == 30
    assert by_gen["easy"]["n_fake"] == 30
    assert result["overall"]["n_real"] == 90 and result["overall"]["n_fake"] == 60
    assert [e["path"].endswith("broken.png") for e in result["errors"]] == [True]
    assert result["overall"]["ap"] > 0.9
    assert result["mean"]["ap"] == pytest.approx(np.mean([by_gen[g]["ap"] for g in by_gen]))
    table = evaluation_table(result)
    assert "easy" in table and "mean" in table and "all" in table


def test_auto_split_uses_test_only_for_training_corpora(cnndetection_corpus, tmp_path):
    det = train_detector("spectral", [cnndetection_corpus], tmp_path / "b", progress=False)
    corpus = discover_corpus(cnndetection_corpus)
    assert evaluate_corpora(det, [corpus], progress=False)["split"] == "test"
    other = tmp_path / "other"
    rng = np.random.default_rng(5)
    for i in range(6):
        save_png(real_image(rng, 32, 32), other / "real" / f"{i}.png")
        save_png(fake_image(rng, 32, 32), other / "fake" / "gen" / f"{i}.png")
    result = evaluate_corpora(det, [discover_corpus(other)], progress=False)
    assert result["split"] == "all" and result["n_images"] == 12
