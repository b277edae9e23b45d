"""The user's path through the command line: quick demo, scan of a mixed folder, evaluate, corpus."""

import csv
import json
import shutil

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow


def test_quick_demo_beats_chance_and_writes_everything(quick_demo):
    out, log = quick_demo
    result = json.loads((out / "evaluation.json").read_text())
    assert result["split"] == "test"
    rows = {row["generator"]: row for row in result["per_generator"]}
    assert set(rows) == {"dcgan", "cgan", "stylegan", "cyclegan", "ddpm"}
    for seen in ("dcgan", "stylegan"):  # the ensemble trained on these two
        assert rows[seen]["n_real"] >= 30 and rows[seen]["n_fake"] >= 30
        assert rows[seen]["ap"] > 0.9, rows[seen]
        assert rows[seen]["roc_auc"] > 0.9, rows[seen]
    assert {"ap", "roc_auc", "eer", "ece"} <= set(rows["dcgan"])
    assert set(result["members"]) == {"spectral", "cnn"}
    assert "Held-out AP" in log and "Leave one generator out" in log  # the tables are printed
    loo = json.loads((out / "leave_one_out.json").read_text())
    assert len(loo["per_generator"]) == 5  # the diffusion model's row included
    for name in ("dcgan_curves.png", "stylegan_samples.png", "cyclegan_samples.png",
                 "mean_spectrum.png"):
        assert (out / "plots" / name).stat().st_size > 5000
    for kind, folder in (("ensemble", "detector"), ("spectral", "detector/members/spectral"),
                         ("cnn", "detector/members/cnn")):
        assert json.loads((out / folder / "detector.json").read_text())["kind"] == kind
    for name in ("dcgan", "cgan", "stylegan", "cyclegan", "ddpm"):
        assert (out / "runs" / name / "weights.safetensors").is_file()
    quality = json.loads((out / "sample_quality.json").read_text())
    assert set(quality) == {"dcgan", "cgan", "stylegan", "cyclegan", "ddpm"}
    assert all(q["FD_tf_efficientnet_lite0"] > 0 and q["IS_tf_efficientnet_lite0"] >= 1
               for q in quality.values())
    table = log.split("Generators at the end of training")[1].split("Leave one generator out")[0]
    assert "ddpm" in table
    rows = [line.split() for line in table.splitlines()[3:]]  # after the text and the header
    collapsed = [row[0] for row in rows if row and row[0] in quality and "collapsed" in row]
    if collapsed:  # the demo says which generators did not get there at its budget
        assert f"Collapsed at this demo's budget: {', '.join(collapsed)}." in table
    ddpm = [json.loads(l) for l in (out / "fake_ddpm" / "manifest.jsonl").read_text().splitlines()]
    assert ddpm and all(r["generator"] == "ddpm" and r["sampler"] == "ddim" for r in ddpm)
    manifest = [json.loads(l) for l in (out / "fake_dcgan" / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 300 and len({r["seed"] for r in manifest}) == 300
    assert all(len(r["checkpoint_sha256"]) == 64 for r in manifest)
    cycle = [json.loads(l) for l in (out / "fake_cyclegan" / "manifest.jsonl").read_text().splitlines()]
    assert all(r["source"] and r["direction"] == "AtoB" for r in cycle)
    assert (out / "robustness" / "report.html").is_file()
    assert (out / "robustness" / "metrics.csv").is_file()


def test_quick_demo_sets_the_general_recipe_beside_the_zoo_ensemble(quick_demo):
    out, log = quick_demo
    comparison = json.loads((out / "comparison.json").read_text())
    rows = {row["detector"]: row for row in comparison["rows"]}
    assert set(rows) == {"ensemble", "general (demo size)", "general (shipped)"}
    for row in rows.values():
        assert set(row) == {"detector", "zoo fakes AP", "zoo fakes AUC", "simulated AP",
                            "simulated AUC", "wild AP", "wild AUC"}
        assert all(0.0 <= v <= 1.0 for k, v in row.items() if k != "detector")
    # Each detector is strongest where it trained: the ensemble on the zoo's fakes (it saw
    # two of the five generators), the general ones on the simulated pairs.
    assert rows["ensemble"]["zoo fakes AP"] > rows["general (demo size)"]["zoo fakes AP"]
    assert rows["general (shipped)"]["simulated AP"] > 0.9  # held-out photos, known simulators
    general = json.loads((out / "general" / "detector.json").read_text())
    assert general["kind"] == "cnn"
    assert general["training"]["recipe"]["name"] == "general"
    pairs = [json.loads(l) for l in
             (out / "general_work" / "pairs" / "manifest.jsonl").read_text().splitlines()]
    assert {r["split"] for r in pairs} == {"train", "val", "test"}
    assert "Zoo-fakes ensemble vs general detectors" in log and "general (demo size)" in log


def test_scan_reports_every_file_and_the_broken_ones(quick_demo, tmp_path):
    out, _ = quick_demo
    good = sorted((out / "fake_dcgan").glob("*.png"))[:3] + sorted((out / "real" / "real").glob("*.png"))[:3]
    mix = tmp_path / "mix"
    (mix / "sub").mkdir(parents=True)
    for i, path in enumerate(good):
        shutil.copy(path, mix / "sub" / f"good{i}.png")
    (mix / "empty.png").write_bytes(b"")
    (mix / "text.jpg").write_text("hello")
    (mix / "trunc.png").write_bytes(good[0].read_bytes()[:300])
    (mix / "notes.txt").write_text("ignored: not an image extension")
    proc = run_cli("scan", mix, "--detector", out / "detector", "--out", tmp_path / "r.csv", "-q")
    with open(tmp_path / "r.csv", newline="") as fh:
        rows = {r["path"].split("/")[-1]: r for r in csv.DictReader(fh)}
    assert len(rows) == 9
    for name in ("empty.png", "text.jpg", "trunc.png"):
        assert rows[name]["error"] and rows[name]["p_fake"] == "" and rows[name]["verdict"] == ""
        assert name in proc.stdout
    assert "empty" in rows["empty.png"]["error"]
    for i in range(6):
        row = rows[f"good{i}.png"]
        assert row["error"] == "" and 0 <= float(row["p_fake"]) <= 1
        assert row["verdict"] in ("real", "fake", "uncertain")  # no --stability: never unsure
    assert "0 unsure, 3 unreadable" in proc.stdout
    run_cli("scan", mix / "sub" / "good0.png", "--detector", out / "detector",
            "--out", tmp_path / "r.jsonl", "--format", "jsonl", "-q")
    (line,) = (tmp_path / "r.jsonl").read_text().splitlines()
    assert {"path", "p_fake", "verdict", "error", "p_fake_cnn", "p_fake_spectral"} == set(
        json.loads(line))


def test_evaluate_and_corpus_info(quick_demo, tmp_path):
    out, _ = quick_demo
    proc = run_cli("evaluate", "--detector", out / "detector", "--corpus", out / "real",
                   out / "fake_dcgan", "--out", tmp_path / "e.json", "-q")
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["split"] == "test"  # auto: the detector was trained on these corpora
    assert {r["generator"]: r for r in result["per_generator"]}["dcgan"]["ap"] > 0.9
    assert "mean" in proc.stdout and "dcgan" in proc.stdout
    info = run_cli("corpus", "info", out / "fake_dcgan", "--json")
    counts = json.loads(info.stdout)["counts"]
    assert counts[0]["generator"] == "dcgan" and counts[0]["total"] == 300
    det = json.loads(run_cli("detector", "info", out / "detector", "--json").stdout)
    assert det["kind"] == "ensemble" and det["training"]["generators"] == ["dcgan", "stylegan"]


def test_user_errors_are_one_line_exit_2(tmp_path):
    proc = run_cli("corpus", "info", tmp_path / "missing", check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = run_cli("scan", tmp_path, "--detector", tmp_path / "nobundle", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_zoo_train_and_sample_through_cli(tmp_path):
    run_cli("corpus", "bundled", tmp_path / "real", "--size", "32", "--count", "40", "-q")
    run_cli("zoo", "train", "dcgan", "--data", tmp_path / "real", "--out", tmp_path / "run",
            "--steps", "3", "--resolution", "32", "--batch-size", "8", "--set", "ngf=8",
            "--set", "ndf=8", "-q")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["config"]["resolution"] == 32 and config["step"] == 3
    run_cli("zoo", "sample", tmp_path / "run", "--n", "5", "--out", tmp_path / "fake", "-q")
    assert len(list((tmp_path / "fake").glob("*.png"))) == 5
    assert "dcgan" in run_cli("zoo", "list").stdout


@pytest.mark.parametrize("family, small", [("dcgan", ["ngf=8", "ndf=8"]),
                                           ("stylegan", ["channel_base=512", "channel_max=32"])])
def test_zoo_gans_train_and_sample_at_128_px(tmp_path, family, small):
    """Fakes at the sizes met in the wild: the zoo's GANs at 128 px through the CLI."""
    from PIL import Image

    run_cli("corpus", "bundled", tmp_path / "real", "--size", "128", "--count", "12", "-q")
    sets = [arg for kv in small for arg in ("--set", kv)]
    run_cli("zoo", "train", family, "--data", tmp_path / "real", "--out", tmp_path / "run",
            "--steps", "2", "--resolution", "128", "--batch-size", "4", *sets, "-q")
    run_cli("zoo", "sample", tmp_path / "run", "--n", "3", "--out", tmp_path / "fake", "-q")
    sizes = {Image.open(p).size for p in (tmp_path / "fake").glob("*.png")}
    assert sizes == {(128, 128)}


def test_the_app_charts_the_demo_diffusion_spectrum_beside_the_gans(quick_demo, monkeypatch):
    """After the demo, the app's 'Spectra by generator' view has a ddpm curve next to the GANs'."""
    from streamlit.testing.v1 import AppTest

    from app_support import APP_DIR, TIMEOUT
    from forensics import serving

    out, _ = quick_demo
    monkeypatch.setenv(serving.ENV_ROOT, str(out))
    monkeypatch.setenv(serving.ENV_DETECTOR, str(out / "detector"))
    at = AppTest.from_file(str(APP_DIR / "Home.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/corpora.py").run()
    at.radio(key="browse_kind").set_value("Spectra by generator").run()
    picked = [c for c in at.multiselect(key="spectra_corpora").options
              if c == "real" or c.startswith("fake_")]
    at.multiselect(key="spectra_corpora").set_value(picked).run()
    assert not at.exception
    groups = list(at.dataframe[0].value["generator"])
    assert groups[0] == "real" and {"dcgan", "stylegan", "ddpm"} <= set(groups)
