"""Robustness runs: grids, the runner, resume after a real kill, torchrun with 2 ranks, reports."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import kill_when
from crashsafe.images import save_png
from forensics.cli import main as cli_main
from forensics.grid import GRIDS, GridError, expand_grid, families, family_of, load_grid
from forensics.perturb import Perturbation
from forensics.report import break_bars, breaking_points, describe_level
from forensics.robustness import RunMismatchError, perturbation_seed, run_robustness
from forensics.robustness_results import FIELDS, RESULTS_FILE, read_results
from forensics.training import train_detector
from test_spectral_detector import fake_image, real_image

N_PER_CLASS = 12
# Small enough for tests, long enough (about a second of work) to kill a run part-way.
OPTIONS = {"grid": "default", "split": "all", "batch_size": 2, "workers": 2}


def cli_args(setup: dict, out: Path) -> list[str]:
    """The `forensics robustness` arguments of the reference run, writing to ``out``."""
    return ["robustness", "--detector", *map(str, setup["bundles"]), "--corpus",
            str(setup["corpus"]), "--out", str(out), "--grid", OPTIONS["grid"],
            "--split", OPTIONS["split"], "--batch-size", str(OPTIONS["batch_size"]),
            "--workers", str(OPTIONS["workers"]), "-q"]


def shard_lines(out: Path) -> list[bytes]:
    return [line for path in sorted((out / "shards").glob("*.jsonl"))
            for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A real/fake corpus with one unreadable file, two spectral bundles, a reference run, and
    the same run by 2 torchrun processes, started in the background as their start-up is slow."""
    root = tmp_path_factory.mktemp("robustness")
    corpus = root / "corpus"
    rng = np.random.default_rng(0)
    for i in range(N_PER_CLASS):
        save_png(real_image(rng, 64, 64), corpus / "real" / f"r{i:02d}.png")
        save_png(fake_image(rng, 64, 64), corpus / "fake" / "upsampler" / f"f{i:02d}.png")
    (corpus / "fake" / "upsampler" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    bundles = [root / "bundles" / "spec16", root / "bundles" / "spec32"]
    for bundle, n_bins in zip(bundles, (16, 32)):
        train_detector("spectral", [corpus], bundle, params={"n_bins": n_bins}, progress=False)
    reference = root / "reference"
    result = run_robustness(bundles, [corpus], reference, progress=False, **OPTIONS)
    setup = {"root": root, "corpus": corpus, "bundles": bundles, "reference": reference,
             "rows": result.rows, "torchrun_out": root / "torchrun"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "forensics.cli",
               *cli_args(setup, setup["torchrun_out"]), "--break-below", "0.9"]
    with open(root / "torchrun.log", "w") as log:
        setup["torchrun"] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    yield setup
    setup["torchrun"].kill()
    setup["torchrun"].wait()


def torchrun_output(setup: dict) -> tuple[Path, str]:
    """The folder and log of the 2-process torchrun run, once it has ended successfully."""
    code = setup["torchrun"].wait(timeout=300)
    log = (setup["root"] / "torchrun.log").read_text()
    assert code == 0, log
    return setup["torchrun_out"], log


def test_grid_files_expand_options_and_refuse_mistakes(tmp_path):
    yaml_file = tmp_path / "grid.yaml"
    yaml_file.write_text("jpeg_cv2: {levels: [90, 50]}\n"
                         "resize: {levels: [1.0, 0.5], interpolation: [nearest, area],"
                         " back: true}\n"
                         "social: {}\n")
    toml_file = tmp_path / "grid.toml"
    toml_file.write_text('[jpeg_cv2]\nlevels = [90, 50]\n[resize]\nlevels = [1.0, 0.5]\n'
                         'interpolation = ["nearest", "area"]\nback = true\n[social]\n')
    ids = [p.id for p in load_grid(yaml_file)]
    assert ids == [p.id for p in load_grid(toml_file)]
    assert ids == ["jpeg_cv2/q=90", "jpeg_cv2/q=50",
                   "resize/scale=1.0,interpolation=nearest,back=true",
                   "resize/scale=0.5,interpolation=nearest,back=true",
                   "resize/scale=1.0,interpolation=area,back=true",
                   "resize/scale=0.5,interpolation=area,back=true", "social"]
    assert list(families(load_grid(yaml_file))) == [
        "jpeg_cv2", "resize/interpolation=nearest,back=true", "resize/interpolation=area,back=true",
        "social"]
    assert family_of(Perturbation("blur", 2)) == "blur"
    default = load_grid("default")
    assert len(default) == 15 + 9 + 16 + 4 + 3 + 1 and len(load_grid("small")) < 15
    assert set(GRIDS) >= {"default", "small"}
    for bad, message in [({"nope": {"levels": [1]}}, "unknown perturbation"),
                         ({"blur": {}}, "levels"), ({"social": {"levels": [1]}}, "no levels"),
                         ({"resize": {"levels": [0.5], "colour": "red"}}, "no option"),
                         ({"jpeg_pil": {"levels": [101]}}, "1..100")]:
        with pytest.raises(GridError, match=message):
            expand_grid(bad)
    with pytest.raises(GridError, match="no such grid"):
        load_grid(tmp_path / "missing.yaml")


def test_runner_scores_every_image_perturbation_and_detector(setup):
    rows, n_images = setup["rows"], 2 * N_PER_CLASS + 1
    keys = [(r["path"], r["detector"], r["perturbation"]) for r in rows]
    assert len(keys) == len(set(keys)) == n_images * 2 * len(load_grid("default"))
    assert all(tuple(r) == FIELDS for r in rows)
    assert {r["detector"] for r in rows} == {"spec16", "spec32"}
    broken = [r for r in rows if r["path"].endswith("broken.png")]
    assert broken and all(r["score"] is None and "not an image" in r["error"] for r in broken)
    good = [r for r in rows if not r["path"].endswith("broken.png")]
    assert all(r["error"] == "" and 0 <= r["score"] <= 1 for r in good)
    jpeg = [r for r in good if r["perturbation"] == "jpeg_pil/q=70"]
    assert {(r["family"], r["level"]) for r in jpeg} == {("jpeg_pil", 70)}
    assert perturbation_seed("real/r00.png", "noise/sigma=5.0") == \
        perturbation_seed("real/r00.png", "noise/sigma=5.0") != \
        perturbation_seed("real/r01.png", "noise/sigma=5.0")
    assert read_results(setup["reference"]) == rows


def test_auto_split_and_guard_against_other_inputs(setup, tmp_path):
    small = dict(OPTIONS, grid="small")
    auto = run_robustness(setup["bundles"][:1], [setup["corpus"]], tmp_path / "a",
                          **{**small, "split": "auto"}, progress=False)
    assert auto.manifest["split"] == "test"  # the bundle was trained on this corpus
    with pytest.raises(RunMismatchError, match="grid differ.*--fresh"):
        run_robustness(setup["bundles"], [setup["corpus"]], setup["reference"], **small,
                       progress=False)
    fresh = run_robustness(setup["bundles"][:1], [setup["corpus"]], tmp_path / "a",
                           **small, fresh=True, progress=False)
    assert fresh.manifest["split"] == "all" and len(fresh.rows) > len(auto.rows)


def test_resume_ignores_a_cut_off_last_line(setup, tmp_path):
    out = tmp_path / "cut"
    shutil.copytree(setup["reference"], out)
    (out / RESULTS_FILE).unlink()
    shard = next((out / "shards").glob("*.jsonl"))
    data = shard.read_bytes()
    shard.write_bytes(data[:len(data) // 3] + b'{"path": "half a ro')
    result = run_robustness(setup["bundles"], [setup["corpus"]], out, progress=False, **OPTIONS)
    assert result.rows == setup["rows"]
    assert len(shard_lines(out)) == len(set(shard_lines(out))) == len(setup["rows"])


def test_resume_after_kill_equals_uninterrupted_run(setup, tmp_path, campaign):
    """kill -9 after seeded-random numbers of result rows, rerunning the same command after
    each kill; the finished table equals the uninterrupted one with no row twice."""
    out = tmp_path / "killed"
    total = len(setup["rows"])
    for wanted in sorted(np.random.default_rng(2).choice(range(1, total - 10), campaign.kills,
                                                         replace=False)):
        kill_when(cli_args(setup, out),
                  lambda: (out / "shards").is_dir() and len(shard_lines(out)) >= wanted)
        lines = shard_lines(out)
        assert len(lines) == len(set(lines)) < total and not (out / RESULTS_FILE).exists()

    assert cli_main(cli_args(setup, out)) == 0  # the same command, finishing the run
    assert read_results(out) == setup["rows"]
    lines = shard_lines(out)
    assert len(lines) == len(set(lines)) == total


def test_two_torchrun_processes_equal_one(setup):
    out, log = torchrun_output(setup)
    assert "on rank 0 of 2" in log and "on rank 1 of 2" in log
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["rank-00000.jsonl",
                                                                   "rank-00001.jsonl"]
    assert all(path.stat().st_size for path in (out / "shards").iterdir())
    assert read_results(out) == setup["rows"]


def test_report_files(setup):
    out, log = torchrun_output(setup)  # rank 0 wrote the report with --break-below 0.9
    document = json.loads((out / "metrics.json").read_text())
    metrics, points = document["metrics"], document["breaking_points"]
    n_generators = 2  # "all" and "upsampler"
    assert len(metrics) == 2 * len(load_grid("default")) * n_generators
    row = next(r for r in metrics if (r["detector"], r["generator"], r["perturbation"]) ==
               ("spec16", "all", "jpeg_pil/q=100"))
    assert row["n"] == 2 * N_PER_CLASS and row["n_errors"] == 1
    assert row["ap"] > 0.9 and 0 <= row["ece"] <= 1
    with open(out / "metrics.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(metrics)
    assert {"ap", "roc_auc", "accuracy", "real_accuracy", "fake_accuracy", "ece"} <= set(table[0])
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert plots == sorted(f"{f.replace('/', '_').replace('=', '-').replace(',', '_')}.png"
                           for f in families(load_grid("default")) if f != "social")
    page = (out / "report.html").read_text()
    assert "spec16" in page and "spec32" in page and "broken.png" in page
    assert page.count("data:image/png;base64,") == len(plots)
    texts = [p["text"] for p in points]
    assert len(texts) == 2 * len(families(load_grid("default")))
    assert all(text in page and text in log for text in texts)
    assert document["break_bars"] == {"ap": 0.9, "balanced_accuracy": 0.7}
    assert any(t.startswith("breaks at downscale factor 0.5: AP") and "below 0.9" in t
               for t in texts)
    # Both spectral bundles keep ranking JPEG 90 perfectly but call images wrong at their
    # saved thresholds: the report must say so though AP never falls.
    jpeg = [p for p in points if p["family"] == "jpeg_pil"]
    assert [(p["level"], p["broken_by"]) for p in jpeg] == [(90, ["balanced_accuracy"])] * 2
    assert all(p["text"].endswith("AP 1.00") and f"BROKEN {p['detector']} {p['text']}" in log
               for p in jpeg)
    assert describe_level("resize/interpolation=area", 0.5) == \
        "downscale factor 0.5 [interpolation=area]"


def test_breaking_points_read_levels_in_grid_order():
    def curve(family, points):
        """Rows of (level, AP, fake accuracy, real accuracy), balanced accuracy their mean."""
        return [{"detector": "d", "generator": "all", "family": family, "level": level, "ap": ap,
                 "fake_accuracy": fake, "real_accuracy": real,
                 "balanced_accuracy": None if fake is None else (fake + real) / 2}
                for level, ap, fake, real in points]

    metrics = (curve("jpeg_pil", [(100, 0.7, 0.9, 0.9), (90, 0.6, 0.9, 0.9)])
               + curve("blur", [(0, 0.9, 0.9, 0.9), (2, 0.85, 0.0, 1.0), (4, 0.7, 0.0, 1.0)])
               + curve("noise", [(0, 0.9, 0.9, 0.9), (20, 0.85, 0.7, 0.8)])
               + curve("crop", [(1.0, None, None, None)])
               + curve("social", [(None, 0.75, 0.4, 0.6)]))
    points = breaking_points(metrics)
    assert [p["text"] for p in points] == [
        "is already broken at JPEG quality 100: AP 0.70, below 0.8; "
        "balanced accuracy 0.90 at the saved threshold",
        "breaks at blur sigma 2: balanced accuracy 0.50 at the saved threshold, below 0.7 "
        "(fake accuracy 0.00: every fake called real, real accuracy 1.00); AP 0.85",
        "holds up to noise sigma 20: AP stays at or above 0.8 (lowest 0.85); "
        "balanced accuracy at the saved threshold stays at or above 0.7 (lowest 0.75)",
        "has no AP or balanced accuracy for crop (they need scored real and fake images)",
        "breaks after the social chain: AP 0.75, below 0.8; balanced accuracy 0.50 at the saved "
        "threshold, below 0.7 (fake accuracy 0.40, real accuracy 0.60)"]
    assert [(p["level"], p["broken_by"]) for p in points] == [
        (100, ["ap"]), (2, ["balanced_accuracy"]), (None, []), (None, []),
        (None, ["ap", "balanced_accuracy"])]
    assert points[1]["values"] == {"ap": 0.85, "balanced_accuracy": 0.5}
    # One bar only, as the app's chosen measure: the threshold collapse at blur 2 goes unseen.
    assert breaking_points(metrics, {"ap": 0.8})[1]["text"] == \
        "breaks at blur sigma 4: AP 0.70, below 0.8"
    with pytest.raises(ValueError, match="--break-balanced-below must lie in"):
        break_bars(balanced_below=1.5)
    with pytest.raises(ValueError, match="--break-metric must be one of ap, roc_auc"):
        break_bars("accuracy")
