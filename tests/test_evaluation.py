"""Training and evaluation over corpus folders: splits, per-generator pairing, bad files, the
protocol figures, leave-one-generator-out, the cross-generator matrix and their command line."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from crashsafe.images import save_png
from forensics.cli import main
from forensics.corpus import discover_corpus
from forensics.evaluation import (
    ProtocolData,
    cross_generator_matrix,
    evaluate_corpora,
    evaluation_table,
    leave_one_out,
    leave_one_out_table,
    matrix_table,
)
from forensics.plots import plot_matrix
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


# ----------------------------------------------------------------------------- protocol


def grid_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A camera-like image with a faint period-2 grid, as uneven transposed convolutions leave."""
    image = real_image(rng, height, width).astype(np.float64)
    i, j = np.indices((height, width))
    return np.clip(image + 3 * (-1.0) ** (i + j)[..., None], 0, 255).astype(np.uint8)


def blocky_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour upsampling by 2 and nothing else."""
    return real_image(rng, height // 2, width // 2).repeat(2, axis=0).repeat(2, axis=1)


@pytest.fixture(scope="module")
def three_generators(tmp_path_factory):
    """Three sets in CNNDetection layout, each with its own reals."""
    root = tmp_path_factory.mktemp("three")
    rng = np.random.default_rng(7)
    for name, make in (("blocky", blocky_image), ("grid", grid_image), ("nn", fake_image)):
        for i in range(24):
            save_png(real_image(rng, 32, 32), root / name / "0_real" / f"{i}.png")
            save_png(make(rng, 32, 32), root / name / "1_fake" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def protocol_data(three_generators):
    return ProtocolData([discover_corpus(three_generators)], progress=False)


def test_evaluation_reports_the_protocol_figures(three_generators, tmp_path):
    det = train_detector("spectral", [three_generators], tmp_path / "b", progress=False,
                         params={"n_bins": 16})
    result = evaluate_corpora(det, [discover_corpus(three_generators)], progress=False,
                              bootstrap=200, plots=tmp_path / "plots")
    assert result["split"] == "test"
    for row in result["per_generator"] + [result["overall"]]:
        assert {"ap", "roc_auc", "eer", "tpr_at_fpr_1pct", "ece", "oracle_accuracy"} <= set(row)
        low, high = row["ci"]["ap"]
        assert low <= row["ap"] <= high
    assert {"ap", "roc_auc", "eer", "ece"} <= set(result["mean"])
    assert sorted(Path(p).name for p in result["plots"]) == ["reliability.png", "roc_pr.png"]
    assert all(Path(p).stat().st_size > 5000 for p in result["plots"])
    assert "ap_95ci" in evaluation_table(result)


def test_leave_one_out_trains_without_the_held_out_generator(protocol_data):
    result = leave_one_out("spectral", {"n_bins": 16}, protocol_data)
    rows = {r["held_out"]: r for r in result["per_generator"]}
    assert set(rows) == {"blocky", "grid", "nn"}
    assert rows["grid"]["train_generators"] == ["blocky", "nn"]
    test_counts = {g: sum(1 for it in protocol_data.items if it.split == "test"
                          and it.meta["set"] == g and it.label == 1) for g in rows}
    assert all(rows[g]["n_fake"] == test_counts[g] for g in rows)
    assert result["mean"]["ap"] == pytest.approx(np.mean([r["ap"] for r in rows.values()]))
    assert "mean" in leave_one_out_table(result)


def test_cross_generator_matrix(protocol_data, tmp_path):
    matrix = cross_generator_matrix("spectral", {"n_bins": 16}, protocol_data)
    assert matrix["generators"] == ["blocky", "grid", "nn"]
    ap = np.array(matrix["ap"], dtype=float)
    assert ap.shape == (3, 3) and np.isfinite(ap).all()
    assert np.diag(ap).mean() > 0.8  # in-distribution works on this easy corpus
    assert "train \\ test" in matrix_table(matrix)
    assert plot_matrix(matrix["ap"], matrix["generators"], tmp_path / "m.png").stat().st_size > 5000


def test_leave_one_out_needs_two_generators(cnndetection_corpus, tmp_path):
    only_easy = tmp_path / "one"
    shutil.copytree(cnndetection_corpus / "easy", only_easy / "easy")
    data = ProtocolData([discover_corpus(only_easy)], progress=False)
    with pytest.raises(ValueError, match="at least two generators"):
        leave_one_out("spectral", {}, data)


# ----------------------------------------------------------------------------- command line


def test_cli_train_info_evaluate(three_generators, tmp_path, capsys):
    bundle = tmp_path / "ens"
    assert main(["detector", "train", "--kind", "ensemble", "--members",
                 "spectral:fft,spectral:npr", "--corpus", str(three_generators),
                 "--out", str(bundle), "--set", "C=0.5", "-q"]) == 0
    assert (bundle / "members" / "spectral-npr" / "detector.json").is_file()
    capsys.readouterr()

    assert main(["detector", "info", str(bundle)]) == 0
    text = capsys.readouterr().out
    assert "threshold" in text and "known failure modes" in text and "member spectral-fft" in text
    assert "blocky" in text and "resizing and JPEG" in text.replace("Resizing", "resizing")
    assert main(["detector", "info", str(bundle), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["kind"] == "ensemble" and card["training"]["generators"] == ["blocky", "grid", "nn"]
    assert card["members"]["spectral-fft"]["calibration"]["method"] == "platt"

    out = tmp_path / "eval.json"
    assert main(["evaluate", "--detector", str(bundle), "--corpus", str(three_generators),
                 "--leave-one-out", "--cross-generator", "--plots", str(tmp_path / "plots"),
                 "--bootstrap", "100", "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "leave one generator out" in printed and "cross-generator AP" in printed
    result = json.loads(out.read_text())
    assert {"ap", "roc_auc", "eer"} <= set(result["mean"])
    assert len(result["leave_one_out"]["per_generator"]) == 3
    assert (tmp_path / "plots" / "cross_generator_ap.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["--kind", "spectral", "--members", "spectral:fft"], "does not take"),
    (["--kind", "spectral", "--features", "wavelet"], "unknown feature family"),
])
def test_cli_train_errors_are_one_line(cnndetection_corpus, tmp_path, capsys, args, message):
    code = main(["detector", "train", *args, "--corpus", str(cnndetection_corpus),
                 "--out", str(tmp_path / "b"), "-q"])
    assert code == 2 and message in capsys.readouterr().err


def test_cli_spectral_classifier_flags(cnndetection_corpus, tmp_path):
    bundle = tmp_path / "svm"
    assert main(["detector", "train", "--kind", "spectral", "--classifier", "svm", "--features",
                 "fft+npr", "--set", "n_bins=16", "--corpus", str(cnndetection_corpus),
                 "--out", str(bundle), "-q"]) == 0
    params = json.loads((bundle / "detector.json").read_text())["params"]
    assert (params["classifier"], params["features"], params["n_bins"]) == ("svm", "fft+npr", 16)
