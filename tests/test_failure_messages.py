"""Failure messages (issue 7, item 6): every user error says what happened and what to do.

Each case runs one failing command through the installed console script and checks: exit status
2 (a user error), no traceback, one line of error on stderr that names the offending path, option
or value, and a remedy (a key phrase per case). The commands run four at a time from a thread
pool, as each is a fresh interpreter start; the fixtures are a 24-image corpus, a spectral
bundle and a finished robustness run."""

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import run_cli
from forensics.robustness import run_robustness
from forensics.training import train_detector
from test_spectral_detector import write_real_fake_folders

CLI_TIMEOUT = 120

# id: (arguments with {placeholders} for the fixture paths, exit status, what the message must
# name (the path, option or value), the remedy's key phrase)
CASES = {
    # corpora
    "corpus info: missing folder": (
        "corpus info {missing}", 2, "{missing}", "pass a corpus folder"),
    "corpus info: folder of no known layout": (
        "corpus info {plain}", 2, "{plain}", "forensics corpus bundled"),
    "corpus info: manifest line not JSON": (
        "corpus info {bad_manifest}", 2, "manifest.jsonl line 2", "fix or remove that line"),
    "corpus bundled: --size too small": (
        "corpus bundled {tmp}/b --size 4 --count 2", 2, "--size", "at least 8"),
    # generator zoo
    "zoo train: unknown generator": (
        "zoo train nosuchgan --data {corpus} --out {tmp}/run --steps 1", 2, "nosuchgan",
        "forensics zoo list"),
    "zoo train: --data of a corpus without reals": (
        "zoo train dcgan --data {fakes_only} --out {tmp}/run --steps 1", 2, "{fakes_only}",
        "plain folder of images"),
    "zoo train: bad --config YAML": (
        "zoo train --config {bad_yaml} --out {tmp}/run", 2, "{bad_yaml}", "fix the file"),
    "zoo train: --config file missing": (
        "zoo train dcgan --config {missing}.yaml --data {corpus} --out {tmp}/run --steps 1", 2,
        "{missing}.yaml", "pass an existing .yaml"),
    "zoo train: unknown --set key": (
        "zoo train dcgan --data {corpus} --out {tmp}/run --steps 1 --set nosuchkey=1", 2,
        "nosuchkey", "valid keys"),
    # an option the family's step would ignore: refused, naming family, option and what it takes
    "zoo train: stylegan --set loss=wgan-gp (no gradient penalty)": (
        "zoo train stylegan --data {corpus} --out {tmp}/run --steps 1 --set loss=wgan-gp", 2,
        "'stylegan' does not support loss='wgan-gp'",
        "supports loss in ['hinge', 'lsgan', 'nonsaturating']"),
    "zoo train: cyclegan --set loss=wgan-gp (no gradient penalty)": (
        "zoo train cyclegan --data {corpus} --data-b {corpus} --out {tmp}/run --steps 1 "
        "--set loss=wgan-gp", 2, "'cyclegan' does not support loss='wgan-gp'",
        "supports loss in ['hinge', 'lsgan', 'nonsaturating']"),
    "zoo train: stylegan --set spectral_norm / lr_d (dcgan options)": (
        "zoo train stylegan --data {corpus} --out {tmp}/run --steps 1 --set spectral_norm=true "
        "--set lr_d=0.001", 2, "'stylegan' does not support config key(s) ['lr_d', "
        "'spectral_norm'] (options of biggan, cgan, dcgan)", "valid keys: ['batch_size'"),
    "zoo train: cyclegan --set diffaugment / r1_gamma / ema_beta": (
        "zoo train cyclegan --data {corpus} --data-b {corpus} --out {tmp}/run --steps 1 "
        "--set diffaugment=color --set r1_gamma=1 --set ema_beta=0.99", 2,
        "'cyclegan' does not support config key(s) ['diffaugment', 'ema_beta', 'r1_gamma']",
        "valid keys: ['batch_size'"),
    "zoo sample: not a run folder": (
        "zoo sample {plain} --n 1 --out {tmp}/s", 2, "{plain}", "forensics zoo train"),
    "zoo metrics: --real missing": (
        "zoo metrics --real {missing} --fake {corpus}/fake", 2, "{missing}",
        "pass a folder of real images"),
    "zoo metrics: empty --real": (
        "zoo metrics --real {empty} --fake {corpus}/fake", 2, "{empty}",
        "--k"),
    # detectors
    "detector train: unknown kind": (
        "detector train --kind nosuchkind --corpus {corpus} --out {tmp}/d", 2, "nosuchkind",
        "known kinds"),
    "detector train: unknown feature": (
        "detector train --corpus {corpus} --out {tmp}/d --features fft+nosuch", 2, "nosuch",
        "known:"),
    "detector train: unknown classifier": (
        "detector train --corpus {corpus} --out {tmp}/d --classifier forest", 2, "forest",
        "choose from"),
    "detector train: bad ensemble member": (
        "detector train --kind ensemble --members spectral,nosuch --corpus {corpus} --out {tmp}/d",
        2, "nosuch", "spectral"),
    "detector train: corpus with no fakes": (
        "detector train --corpus {reals_only} --out {tmp}/d", 2, "{reals_only}",
        "fake/<generator>/"),
    "detector train: parameter the kind does not take": (
        "detector train --corpus {corpus} --out {tmp}/d --set nosuchparam=1", 2, "nosuchparam",
        "it takes features"),
    "detector info: not a bundle": (
        "detector info {plain}", 2, "{plain}", "forensics detector train"),
    "bundle of an unknown detector kind": (
        "detector info {alien_bundle}", 2, "'alien'", "forensics detector train"),
    # scan, evaluate, robustness
    "scan: empty folder": (
        "scan {empty} --detector {bundle} --out {tmp}/r.csv", 2, "{empty}",
        "folders holding them"),
    "scan: --detector missing": (
        "scan {corpus} --detector {missing} --out {tmp}/r.csv", 2, "{missing}",
        "forensics detector train"),
    "scan: --max-bytes 0": (
        "scan {corpus} --detector {bundle} --max-bytes 0", 2, "--max-bytes", "at least 1"),
    "scan: --out below a file": (
        "scan {corpus} --detector {bundle} --out {plain}/notes.txt/r.csv", 2,
        "{plain}/notes.txt", "check the path"),
    "evaluate: empty corpus folder": (
        "evaluate --detector {bundle} --corpus {empty}", 2, "{empty}", "datasets.md"),
    "evaluate: split with no images": (
        "evaluate --detector {bundle} --corpus {val_only} --split test", 2, "{val_only}",
        "choose another --split"),
    "evaluate: cross-generator on a corpus with no fakes": (
        "evaluate --detector {bundle} --corpus {reals_only} --cross-generator --bootstrap 0", 2,
        "{reals_only}", "pass corpora with fake images"),
    "evaluate: leave-one-out with one generator": (
        "evaluate --detector {bundle} --corpus {corpus} --leave-one-out --bootstrap 0", 2,
        "['upsampled']", "two or more generators"),
    "robustness: unknown built-in grid": (
        "robustness --detector {bundle} --corpus {corpus} --out {tmp}/rob --grid tiny", 2,
        "tiny", "built-in grids"),
    "robustness: grid file with an unknown perturbation": (
        "robustness --detector {bundle} --corpus {corpus} --out {tmp}/rob --grid {bad_grid}", 2,
        "'blurr'", "known:"),
    "robustness: resume against other inputs": (
        "robustness --detector {bundle} --corpus {corpus} --out {rob} --grid small --split all",
        2, "{rob}", "--fresh"),
    "robustness: the same bundle twice": (
        "robustness --detector {bundle} {bundle} --corpus {corpus} --out {tmp}/rob", 2,
        "{bundle}", "give each bundle once"),
    "robustness: --limit 0": (
        "robustness --detector {bundle} --corpus {corpus} --out {tmp}/rob --limit 0", 2,
        "--limit", "pass positive numbers"),
    "app: --detector not a bundle": (
        "app --detector {plain}", 2, "{plain}", "forensics detector train"),
}


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """The paths the cases name, made once."""
    root = tmp_path_factory.mktemp("failures")
    corpus = write_real_fake_folders(root / "corpus", 12, 32, 0, "upsampled")
    reals_only, fakes_only = root / "reals_only", root / "fakes_only"
    shutil.copytree(corpus / "real", reals_only / "real")
    shutil.copytree(corpus / "fake", fakes_only / "fake")
    val_only = root / "val_only"  # a manifest corpus whose images all lie in the val split
    shutil.copytree(corpus, val_only)
    (val_only / "manifest.jsonl").write_text("".join(
        json.dumps({"path": p.relative_to(val_only).as_posix(),
                    "label": "real" if p.parent.name == "real" else "fake",
                    "generator": "upsampled", "split": "val"}) + "\n"
        for p in sorted(val_only.rglob("*.png"))))
    bad_manifest = root / "bad_manifest"
    bad_manifest.mkdir()
    (bad_manifest / "manifest.jsonl").write_text('{"path": "a.png", "label": "real"}\n{oops\n')
    plain, empty = root / "plain", root / "empty"
    plain.mkdir()
    (plain / "notes.txt").write_text("not a corpus, a run or a bundle\n")
    empty.mkdir()
    bundle = root / "bundle"
    train_detector("spectral", [corpus], bundle, progress=False)
    alien = root / "alien_bundle"
    shutil.copytree(bundle, alien)
    manifest = json.loads((alien / "detector.json").read_text())
    (alien / "detector.json").write_text(json.dumps({**manifest, "kind": "alien"}))
    (root / "bad_grid.yaml").write_text("blurr:\n  levels: [1]\n")
    (root / "bad.yaml").write_text("name: dcgan\nconfig: {resolution: [16\n")
    rob = root / "rob"  # a finished run over the val split: rerunning over 'all' is refused
    run_robustness([bundle], [corpus], rob, grid="small", split="val", progress=False)
    tmp = root / "tmp"
    tmp.mkdir()
    return {"corpus": corpus, "reals_only": reals_only, "fakes_only": fakes_only,
            "val_only": val_only, "bad_manifest": bad_manifest, "plain": plain, "empty": empty,
            "missing": root / "missing", "bundle": bundle, "alien_bundle": alien,
            "bad_grid": root / "bad_grid.yaml", "bad_yaml": root / "bad.yaml", "rob": rob,
            "tmp": tmp}


@pytest.fixture(scope="module")
def outcomes(places):
    """Every case's completed process, run on a small pool of workers."""
    def run(case):
        args = CASES[case][0].format(**places).split() + ["-q"]
        return case, run_cli(*args, check=False, timeout=CLI_TIMEOUT)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(run, CASES))


@pytest.mark.parametrize("case", list(CASES))
def test_failure_says_what_and_what_to_do(outcomes, places, case):
    _, status, names, remedy = CASES[case]
    names = names.format(**places)
    proc = outcomes[case]
    stderr = proc.stderr.strip()
    assert proc.returncode == status, f"{case}: exit {proc.returncode}\n{stderr}"
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    if lines and lines[0].startswith("usage:"):  # argparse: usage lines, then the error
        lines = [line for line in lines if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith("forensics"), stderr
    message = lines[0]
    assert names in message, f"{case}: {names!r} not named in\n{message}"
    assert remedy in message, f"{case}: no remedy ({remedy!r}) in\n{message}"


def test_every_case_ran_in_time(outcomes):
    assert set(outcomes) == set(CASES) and len(CASES) >= 20


def test_a_bug_is_one_line_with_exit_1_and_the_traceback_only_with_v(monkeypatch, capsys):
    """An unexpected exception is not blamed on the input: exit 1, one line; -v re-raises."""
    from forensics import cli
    from forensics.cli import corpus_commands

    def broken(args):
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr(corpus_commands, "cmd_corpus_info", broken)
    assert cli.main(["corpus", "info", "anywhere"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("forensics: internal error: RuntimeError: something unexpected (a bug, not a "
                   "problem with your input: rerun with -v for the traceback and report it)")
    with pytest.raises(RuntimeError):
        cli.main(["corpus", "info", "anywhere", "-v"])
