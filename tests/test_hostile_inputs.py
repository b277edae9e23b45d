"""Hostile inputs (issue 7, item 1): scan, evaluate and robustness over broken, odd and
malicious files through the real command line, load_image's one exception type on each of them,
and a fixed-budget hypothesis fuzz of the decoder."""

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FORENSICS, run_cli
from crashsafe.images import IMAGE_ERROR_ADVICE, ImageError, ImageLimits, load_image, save_png
from forensics.training import train_detector
from hostile import HOSTILE_MAX_BYTES, valid_samples, write_hostile_corpus
from test_spectral_detector import write_real_fake_folders

LIMITS = ImageLimits(max_bytes=HOSTILE_MAX_BYTES)
CLI_TIMEOUT = 120  # seconds: a hang fails the test instead of stalling CI


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    return folder, write_hostile_corpus(folder)


@pytest.fixture(scope="module")
def clean_corpus(tmp_path_factory):
    """real/ + fake/upsampled/ layout, small enough to train a spectral bundle in a second."""
    return write_real_fake_folders(tmp_path_factory.mktemp("clean"), 24, 32, 0, "upsampled")


@pytest.fixture(scope="module")
def bundle(clean_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "spectral"
    train_detector("spectral", [clean_corpus], out, progress=False)
    return out


@pytest.fixture(scope="module")
def mixed_corpus(clean_corpus, hostile, tmp_path_factory):
    """The clean corpus plus the hostile PNGs and a dangling symlink, spread over both classes.

    The over-the-limit PNG is valid under the default limits, which these runs use, so it is
    left out (test_limits_* below pass small --max-bytes / --max-pixels instead)."""
    root = tmp_path_factory.mktemp("mixed") / "corpus"
    shutil.copytree(clean_corpus, root)
    folder, files = hostile
    picked = [f for f in files if f.expected == "error" and f.path.is_file()
              and not f.path.is_symlink() and f.path.suffix == ".png"
              and f.path.name != "over_byte_limit.png"]
    for i, f in enumerate(picked):
        target = root / ("real" if i % 2 else "fake/upsampled") / f"hostile_{f.path.name}"
        shutil.copyfile(f.path, target)
    os.symlink("nowhere.png", root / "real" / "hostile_dangling.png")
    return root, len(picked) + 1


def test_load_image_raises_only_image_error(hostile):
    folder, files = hostile
    outcomes = {}
    for f in files:
        try:
            image = load_image(f.path, limits=LIMITS)
        except ImageError as exc:
            assert exc.reason and exc.kind in IMAGE_ERROR_ADVICE, f.what
            outcomes[f.path] = "error"
        else:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            outcomes[f.path] = "ok"
    assert outcomes == {f.path: f.expected for f in files}
    print(f"\nhostile corpus: {len(files)} inputs tried in-process "
          f"({sum(f.expected == 'ok' for f in files)} decodable, "
          f"{sum(f.expected == 'error' for f in files)} refused)")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_scan_reports_every_hostile_file_and_scores_the_rest(hostile, bundle, tmp_path, fmt):
    folder, files = hostile
    out = tmp_path / f"results.{fmt}"
    proc = run_cli("scan", folder, "--detector", bundle, "--out", out,
                   "--format", fmt, "--max-bytes", HOSTILE_MAX_BYTES, "-q", timeout=CLI_TIMEOUT)
    assert "Traceback" not in proc.stderr
    raw = out.read_bytes().decode("utf-8", "surrogateescape")
    if fmt == "csv":
        rows = list(csv.DictReader(raw.splitlines()))
    else:
        rows = [json.loads(line) for line in raw.splitlines()]
    by_path = {os.fsencode(r["path"]): r for r in rows}
    # a folder named like an image is walked as a folder (here: empty), so it has no row
    files = [f for f in files if not (f.path.is_dir() and not f.path.is_symlink())]
    expected = {os.fsencode(str(f.path)): f for f in files}
    assert set(by_path) == set(expected) and len(rows) == len(files)
    for key, f in expected.items():
        row = by_path[key]
        if f.expected == "ok":
            assert not row["error"] and 0.0 <= float(row["p_fake"]) <= 1.0, f.what
        else:
            assert row["error"] and row["p_fake"] in ("", None), f.what
    assert f"scanned {len(files)} files" in proc.stdout
    # what to do, once per kind of problem: too large, empty, corrupt, not an image, ...
    advice = [line for line in proc.stdout.splitlines() if line.startswith("  what to do (")]
    assert len(advice) >= 6 and all(line.split("): ", 1)[1] in IMAGE_ERROR_ADVICE.values()
                                    for line in advice)


def test_scan_prints_a_broken_non_utf8_name_as_its_bytes(bundle, tmp_path):
    """The error line names the file by its bytes (as ls does) instead of crashing the scan."""
    name = b"broken_\xe9\xff.png"
    (tmp_path / os.fsdecode(name)).write_bytes(valid_samples()["png"][:100])
    proc = subprocess.run([FORENSICS, "scan", str(tmp_path), "--detector", str(bundle),
                           "--out", str(tmp_path / "out.jsonl"), "--format", "jsonl", "-q"],
                          capture_output=True, timeout=CLI_TIMEOUT,
                          # strict, as in a UTF-8 locale other than C.UTF-8
                          env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr
    assert b"scanned 1 files" in proc.stdout and name in proc.stdout
    (row,) = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert os.fsencode(row["path"]).endswith(name) and row["error"]


def test_scan_says_what_it_skipped_for_the_extension_and_all_files_reads_it(bundle, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "photo.png").write_bytes(valid_samples()["png"])
    (folder / "image.txt").write_bytes(valid_samples()["png"])  # a PNG under a wrong name
    (folder / "notes.json").write_text("{}")
    out = tmp_path / "out.csv"
    proc = run_cli("scan", folder, "--detector", bundle, "--out", out, "-q")
    assert proc.returncode == 0, proc.stderr
    assert "scanned 1 files" in proc.stdout
    assert "2 files skipped for their extension (1 .json, 1 .txt), not read: pass --all-files" \
        in proc.stdout
    proc = run_cli("scan", folder, "--all-files", "--detector", bundle, "--out", out, "-q")
    assert proc.returncode == 0 and "scanned 3 files" in proc.stdout, proc.stderr
    rows = {Path(r["path"]).name: r for r in csv.DictReader(out.open())}
    assert rows["image.txt"]["verdict"] and not rows["image.txt"]["error"]  # read by content
    assert "not an image" in rows["notes.json"]["error"]
    (folder / "photo.png").unlink()
    proc = run_cli("scan", folder, "--detector", bundle, "--out", out, "-q", check=False)
    assert proc.returncode == 2
    assert "2 files skipped for their extension" in proc.stderr and "--all-files" in proc.stderr


def test_evaluate_reports_hostile_files_and_still_gives_metrics(mixed_corpus, bundle, tmp_path):
    root, n_hostile = mixed_corpus
    out = tmp_path / "eval.json"
    proc = run_cli("evaluate", "--detector", bundle, "--corpus", root, "--split", "all",
                   "--bootstrap", "20", "--out", out, "-q", timeout=CLI_TIMEOUT)
    assert "Traceback" not in proc.stderr
    result = json.loads(out.read_text())
    assert len(result["errors"]) == n_hostile
    assert all(e["error"] and "hostile_" in e["path"] for e in result["errors"])
    assert result["n_scored"] == 48 and result["overall"]["ap"] > 0.8
    assert proc.stdout.count("  error: ") == n_hostile


def test_robustness_reports_hostile_files_and_still_gives_metrics(mixed_corpus, bundle,
                                                                   tmp_path):
    root, n_hostile = mixed_corpus
    out = tmp_path / "rob"
    proc = run_cli("robustness", "--detector", bundle, "--corpus", root, "--out", out,
                   "--grid", "small", "--split", "all", "-q", timeout=CLI_TIMEOUT)
    assert "Traceback" not in proc.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    bad = [r for r in rows if r["error"]]
    assert bad and {os.path.basename(r["path"]) for r in bad} <= {
        p.name for p in root.rglob("hostile_*")}
    assert len({r["path"] for r in bad}) == n_hostile
    assert sum(r["score"] is not None for r in rows) > len(rows) // 2
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics and all(m["n_errors"] == n_hostile and m["n"] == 48 and m["ap"] is not None
                           for m in metrics if m["generator"] == "all")


def test_training_skips_hostile_files_and_names_them(mixed_corpus, tmp_path):
    """detector train and zoo train on the mixed corpus: every hostile file of the splits they
    read is skipped with its reason (in the bundle / the run's config.json), and they finish."""
    root, n_hostile = mixed_corpus
    hostile = {p.name for p in root.rglob("hostile_*")}
    bundle = tmp_path / "bundle"
    proc = run_cli("detector", "train", "--kind", "spectral", "--corpus", root, "--out", bundle,
                   "-q", timeout=CLI_TIMEOUT)
    assert "Traceback" not in proc.stderr
    skipped = json.loads((bundle / "detector.json").read_text())["training"]["skipped_files"]
    assert skipped and all(os.path.basename(s["path"]) in hostile and s["error"]
                           for s in skipped)
    run = tmp_path / "run"
    proc = run_cli("zoo", "train", "dcgan", "--data", root, "--split", "all", "--out", run,
                   "--steps", 1, "--resolution", 16, "--set", "ngf=4", "--set", "ndf=4",
                   "--device", "cpu", "-q", timeout=CLI_TIMEOUT)
    assert "Traceback" not in proc.stderr
    dataset = json.loads((run / "config.json").read_text())["extra"]["dataset"]
    n_real_hostile = sum(1 for p in (root / "real").glob("hostile_*"))
    assert dataset["skipped_images"] == n_real_hostile and dataset["num_images"] == 24


# --- --max-bytes / --max-pixels on evaluate and robustness ------------------------------------

BIG = ("real/big_0.png", "real/big_1.png", "fake/upsampled/big_0.png", "fake/upsampled/big_1.png")
# (option, value, the limit as the error names it): the 32 px images pass, the 128 px ones not
LIMIT_CASES = {"max-pixels": ("--max-pixels", "5000", "over the limit of 5,000"),
               "max-bytes": ("--max-bytes", "20000", "over the limit of 19.5 KB")}


@pytest.fixture(scope="module")
def oversized_corpus(clean_corpus, tmp_path_factory):
    """The clean corpus plus four valid 128 px noise PNGs (16,384 pixels, about 49 KB each)."""
    root = tmp_path_factory.mktemp("oversized") / "corpus"
    shutil.copytree(clean_corpus, root)
    rng = np.random.default_rng(7)
    for rel in BIG:
        save_png(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8), root / rel)
        assert (root / rel).stat().st_size > 20000
    return root


@pytest.mark.parametrize("case", sorted(LIMIT_CASES))
def test_limits_evaluate_reports_files_over_the_limit(oversized_corpus, bundle, tmp_path, case):
    option, value, named = LIMIT_CASES[case]
    out = tmp_path / "eval.json"
    proc = run_cli("evaluate", "--detector", bundle, "--corpus", oversized_corpus, "--split",
                   "all", "--bootstrap", "0", "--out", out, option, value, "-q",
                   timeout=CLI_TIMEOUT)
    result = json.loads(out.read_text())
    assert sorted(os.path.relpath(e["path"], oversized_corpus) for e in result["errors"]) \
        == sorted(BIG)
    assert all(named in e["error"] for e in result["errors"]), result["errors"]
    assert result["n_scored"] == 48 and result["overall"]["ap"] > 0.8
    assert result["image_limits"][case.replace("-", "_")] == int(value)
    assert proc.stdout.count("  error: ") == 4 and named in proc.stdout


@pytest.mark.parametrize("case", sorted(LIMIT_CASES))
def test_limits_robustness_reports_files_over_the_limit(oversized_corpus, bundle, tmp_path,
                                                         case):
    option, value, named = LIMIT_CASES[case]
    out = tmp_path / "rob"
    args = ["robustness", "--detector", bundle, "--corpus", oversized_corpus, "--out", out,
            "--grid", "small", "--split", "all", "-q"]
    run_cli(*args, option, value, timeout=CLI_TIMEOUT)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    bad = [r for r in rows if r["error"]]
    assert {os.path.relpath(r["path"], oversized_corpus) for r in bad} == set(BIG)
    assert all(named in r["error"] for r in bad)
    assert all(r["score"] is not None for r in rows if not r["error"])
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics and all(m["n_errors"] == 4 and m["n"] == 48 and m["ap"] is not None
                           for m in metrics if m["generator"] == "all")
    run = json.loads((out / "run.json").read_text())
    assert run["image_limits"][case.replace("-", "_")] == int(value)
    # other limits would score other files: resuming with them is refused, --fresh starts over
    proc = run_cli(*args, check=False, timeout=CLI_TIMEOUT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "image_limits differ" in proc.stderr and "--fresh" in proc.stderr


# --- fuzzing ---------------------------------------------------------------------------------

SEEDS = valid_samples()
FUZZ_LIMITS = ImageLimits(max_pixels=4_000_000, max_bytes=1 << 20)


@st.composite
def mutated_images(draw):
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(0, 8))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        position = draw(st.integers(0, len(data)))
        data[position:position] = draw(st.binary(max_size=64))
    return bytes(data)


def test_fuzzed_encodings_decode_or_raise_image_error(campaign):
    """load_image on mutated encodings gives an RGB uint8 array or an ImageError.

    Every format; 20x the examples with ``--campaign long``. The inputs are derandomised, but which ones hypothesis draws can change with what else the
    process has imported; the counts printed are those of the run at hand."""
    count = {"tried": 0, "decoded": 0, "refused": 0}
    formats = "/".join(ext.upper() for ext in SEEDS)

    @settings(max_examples=campaign.fuzz_examples, deadline=None, derandomize=True,
              database=None)
    @given(mutated_images())
    def check(data):
        count["tried"] += 1
        try:
            image = load_image(data, limits=FUZZ_LIMITS, name="fuzz")
        except ImageError as exc:
            assert exc.reason and exc.path == "fuzz"
            count["refused"] += 1
        else:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert image.flags.c_contiguous
            count["decoded"] += 1

    check()
    print(f"\nfuzzing ({campaign.name}): {count['tried']} mutated {formats} encodings, "
          f"{count['decoded']} decoded, {count['refused']} refused with ImageError")
    assert count["tried"] >= campaign.fuzz_examples
