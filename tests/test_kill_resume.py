"""Interrupted runs (issue 7): SIGKILL the real console script mid-way, rerun, compare with an
uninterrupted run. `forensics robustness` has its own kill test in test_robustness.py; the
number of kills grows with ``--campaign long``."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import ONE_THREAD, kill_or_finish, kill_when, run_cli, start_cli
from generators_support import FAMILY_RUNS
from crashsafe.images import load_image
from forensics.bundled import write_bundled_corpus
from forensics.detectors import load_detector
from test_spectral_detector import write_real_fake_folders

TRAIN = ["--checkpoint-every", "2", "--set", "ngf=8", "--set", "ndf=8", "--resolution", "16",
         "--batch-size", "8", "--device", "cpu", "-q"]
STEPS = 16


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob(".*.tmp"))


def checkpoint_step(run: Path) -> int:
    """The step of the last complete checkpoint (config.json is written last, atomically)."""
    try:
        return json.loads((run / "config.json").read_text())["step"]
    except FileNotFoundError:
        return 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The 32 px bundled corpus and an uninterrupted training run on it."""
    root = tmp_path_factory.mktemp("kill")
    write_bundled_corpus(root / "corpus", size=32, count=64, seed=0)
    run = root / "whole"
    run_cli("zoo", "train", "dcgan", "--data", root / "corpus", "--out", run, "--steps", STEPS,
            *TRAIN, timeout=300)
    return root, run


def test_zoo_train_killed_then_resumed_equals_uninterrupted(trained, tmp_path):
    root, whole = trained
    run = tmp_path / "run"
    args = ["zoo", "train", "dcgan", "--data", root / "corpus", "--out", run, "--steps", STEPS,
            *TRAIN]
    # The kill lands after a seeded-random number of checkpoints (every 2 steps).
    checkpoints = int(np.random.default_rng(7).integers(1, STEPS // 2 - 1))
    kill_when(args, lambda: checkpoint_step(run) >= 2 * checkpoints)
    assert 2 * checkpoints <= checkpoint_step(run) < STEPS

    run_cli(*args, "--resume", timeout=300)
    assert_same_run(run, whole)


def test_zoo_train_killed_inside_checkpoint_saves_resumes_exactly(trained, tmp_path, campaign):
    """Checkpoint every step and kill while a save's staging folder exists, at seeded-random
    steps: each resume must find the previous or the new checkpoint whole."""
    root, whole = trained
    run = tmp_path / "run"
    args = ["zoo", "train", "dcgan", "--data", root / "corpus", "--out", run, "--steps", STEPS,
            *TRAIN, "--checkpoint-every", "1"]
    pending = run / ".pending"
    inside = 0
    steps = np.random.default_rng(3).choice(STEPS - 2, campaign.kills, replace=False)
    for i, at in enumerate(sorted(steps)):
        kill_when([*args, *(["--resume"] if i else [])],
                  lambda: pending.exists() and checkpoint_step(run) >= at, poll=0.0)
        inside += pending.exists()  # still there: the kill cut the save itself
    print(f"\n{inside} of {campaign.kills} kills left a checkpoint save unfinished")
    run_cli(*args, "--resume", timeout=300)
    assert_same_run(run, whole)
    assert not pending.exists()


FAMILY_STEPS = 8


@pytest.mark.parametrize("family", sorted(FAMILY_RUNS))
def test_every_family_killed_then_resumed_equals_uninterrupted(trained, tmp_path, family):
    root, _ = trained
    args = ["zoo", "train", family, "--data", root / "corpus", "--steps", FAMILY_STEPS,
            "--checkpoint-every", "2", "--device", "cpu", "--diagnostics-every", "0", "-q",
            *FAMILY_RUNS[family]]
    # The uninterrupted run goes on beside the killed one, each on one of the two cores.
    whole = start_cli([*args, "--out", tmp_path / "whole"], ONE_THREAD, tmp_path / "whole.log")
    run = tmp_path / "run"
    kill_when([*args, "--out", run], lambda: checkpoint_step(run) >= 2, env=ONE_THREAD)
    assert 2 <= checkpoint_step(run) < FAMILY_STEPS
    run_cli(*args, "--out", run, "--resume", timeout=300, env=ONE_THREAD)
    assert whole.wait(timeout=300) == 0, (tmp_path / "whole.log").read_text()
    assert_same_run(run, tmp_path / "whole", FAMILY_STEPS)


def assert_same_run(run: Path, whole: Path, steps: int = STEPS) -> None:
    """Weights and per-step losses of ``run`` equal the uninterrupted ``whole``; no temp files."""
    expected, got = load_file(whole / "weights.safetensors"), load_file(run / "weights.safetensors")
    assert sorted(got) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(1, steps + 1))
    whole_rows = [json.loads(line) for line in (whole / "stats.jsonl").read_text().splitlines()]
    losses = ("loss_d", "loss_g", "loss")  # "loss": families without a discriminator
    assert [[r.get(key) for key in losses] for r in rows] == \
        [[r.get(key) for key in losses] for r in whole_rows]
    assert any(value is not None for value in rows[-1].values())
    assert temp_files(run) == []


def test_zoo_sample_killed_then_rerun_equals_uninterrupted(trained, tmp_path, campaign):
    _, run = trained
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run_cli("zoo", "sample", run, "--n", 400, "--out", whole, "--seed", 0, "--batch-size", 32,
            "--device", "cpu", "-q", timeout=300)
    args = ["zoo", "sample", run, "--n", 400, "--out", cut, "--seed", 0, "--batch-size", 32,
            "--device", "cpu", "-q"]
    # Kills after seeded-random numbers of images, each rerun going on from the last.
    for wanted in sorted(np.random.default_rng(11).choice(range(1, 380), campaign.kills,
                                                          replace=False)):
        kill_when(args, lambda: cut.exists() and len(list(cut.glob("*.png"))) >= wanted)
        assert len(list(cut.glob("*.png"))) < 400

    run_cli(*args, timeout=300)
    pngs = sorted(p.name for p in cut.glob("*.png"))
    assert len(pngs) == 400 and pngs == sorted(p.name for p in whole.glob("*.png"))
    rows = [json.loads(line) for line in (cut / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 400 and sorted(row["seed"] for row in rows) == list(range(400))
    assert sorted(row["path"] for row in rows) == pngs
    for name in pngs:
        load_image(cut / name)  # decodes in full
        assert (cut / name).read_bytes() == (whole / name).read_bytes(), name
    assert temp_files(cut) == []


@pytest.fixture(scope="module")
def detector_corpus(tmp_path_factory):
    return write_real_fake_folders(tmp_path_factory.mktemp("detcorpus"), 24, 64, 3, "upsampler")


def test_detector_train_killed_leaves_no_half_bundle_and_rerun_equals(detector_corpus, tmp_path,
                                                                       campaign):
    images = [load_image(p) for p in sorted(detector_corpus.rglob("*.png"))]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    args = ["detector", "train", "--kind", "spectral", "--corpus", detector_corpus, "-q"]
    run_cli(*args, "--out", whole, timeout=300)
    expected = load_detector(whole).predict_proba(images)

    def check_bundle() -> None:
        """Either no detector.json or a complete bundle that scores like the whole run."""
        if (cut / "detector.json").exists():
            json.loads((cut / "detector.json").read_text())  # never half-written
            np.testing.assert_array_equal(load_detector(cut).predict_proba(images), expected)

    # Kill 1: as soon as the first bundle file appears in a fresh folder (the save takes
    # milliseconds, so this lands during or just after it).
    kill_or_finish([*args, "--out", cut], lambda: cut.exists() and any(cut.iterdir()))
    check_bundle()
    run_cli(*args, "--out", cut, timeout=300)  # now a complete bundle is in place
    # The other kills: at seeded-random moments of a run over the complete bundle.
    for delay in np.random.default_rng(5).uniform(0.2, 1.2, size=campaign.kills - 1):
        start = time.monotonic()
        kill_or_finish([*args, "--out", cut], lambda: time.monotonic() - start >= delay)
        check_bundle()

    run_cli(*args, "--out", cut, timeout=300)
    np.testing.assert_array_equal(load_detector(cut).predict_proba(images), expected)
    assert temp_files(cut) == []


# A tiny random-init CNN, 3 steps an epoch on 1 thread: the epochs take well under a second, so
# each run's time is mostly the interpreter start.
CNN_EPOCHS = 6
CNN_TRAIN = ["detector", "train", "--kind", "cnn", "-q",
             *[item for setting in ("backbone=test_efficientnet", "pretrained=false",
                                    "crop_size=32", "batch_size=8", "steps_per_epoch=3",
                                    "threads=1", f"epochs={CNN_EPOCHS}",
                                    f"patience={CNN_EPOCHS}")
               for item in ("--set", setting)]]


def state_epoch(out: Path) -> int:
    """The epoch of the training state in ``out`` (0: none yet); state.json is written last."""
    try:
        document = json.loads((out / ".train-state" / "state.json").read_text())
    except FileNotFoundError:
        return 0
    return dict(document["state"]["$dict"])["epoch"]


def test_cnn_detector_train_killed_then_resumed_equals_uninterrupted(detector_corpus, tmp_path,
                                                                      campaign):
    """kill -9 after seeded-random epochs (each rerun with --resume goes on from the last); the
    final --resume gives the bundle an uninterrupted run gives, and leaves no state behind."""
    images = [load_image(p) for p in sorted(detector_corpus.rglob("*.png"))]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    args = [*CNN_TRAIN, "--corpus", detector_corpus]
    run_cli(*args, "--out", whole, timeout=300)
    kills = min(campaign.kills, CNN_EPOCHS - 1)
    epochs = sorted(np.random.default_rng(13).choice(range(1, CNN_EPOCHS), kills, replace=False))
    for i, epoch in enumerate(epochs):
        kill_when([*args, "--out", cut, *(["--resume"] if i else [])],
                  lambda: state_epoch(cut) >= epoch, timeout=300, poll=0.01)
        assert state_epoch(cut) >= epoch

    proc = run_cli(*args, "--out", cut, "--resume", timeout=300)
    assert "training from scratch" not in proc.stdout
    info = json.loads((cut / "detector.json").read_text())["training"]
    assert info["resumed_after_epoch"] >= epochs[-1]
    expected = json.loads((whole / "detector.json").read_text())["training"]
    assert info["history"] == expected["history"]
    got, want = load_file(cut / "weights.safetensors"), load_file(whole / "weights.safetensors")
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    np.testing.assert_array_equal(load_detector(cut).predict_proba(images),
                                  load_detector(whole).predict_proba(images))
    assert not (cut / ".train-state").exists() and temp_files(cut) == []
    assert sorted(p.name for p in cut.iterdir()) == sorted(p.name for p in whole.iterdir())
