"""`forensics app`: the shipped general detector by default, then Streamlit replaces the CLI."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from forensics import cli, serving


@pytest.fixture
def exec_calls(monkeypatch):
    """Capture os.execve instead of replacing the test process with Streamlit."""
    calls = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    return calls


def test_app_uses_the_shipped_general_detector_by_default(tmp_path, monkeypatch, exec_calls):
    from forensics.detectors.general import general_detector_path

    monkeypatch.chdir(tmp_path)
    assert cli.main(["app", "--port", "8765", "-q"]) == 0
    path, argv, env = exec_calls[0]
    assert path == sys.executable and argv[1:4] == ["-m", "streamlit", "run"]
    assert argv[4].endswith(os.path.join("app", "Home.py"))
    flags = dict(zip(argv[5::2], argv[6::2]))
    assert flags["--server.address"] == "127.0.0.1" and flags["--server.port"] == "8765"
    assert flags["--browser.gatherUsageStats"] == "false" and flags["--server.headless"] == "true"
    assert flags["--server.maxUploadSize"] == "100"
    assert env[serving.ENV_DETECTOR] == str(general_detector_path())
    assert env[serving.ENV_ROOT] == str(tmp_path / "runs")
    assert env[serving.ENV_SCORING_SLOTS] == "1"
    assert cli.main(["app", "--scoring-slots", "3", "-q"]) == 0
    assert exec_calls[1][2][serving.ENV_SCORING_SLOTS] == "3"


def test_app_refuses_a_folder_that_is_not_a_bundle(tmp_path, capsys, exec_calls):
    assert cli.main(["app", "--detector", str(tmp_path), "--root", str(tmp_path)]) == 2
    assert "no detector.json" in capsys.readouterr().err
    assert exec_calls == []


def test_demo_help_and_readme_give_the_measured_demo_times(capsys):
    """`demo --help` and the README state the same wall times, and those are the measured
    ones the README records (rounded: quick to half minutes, full to minutes)."""
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    quick = float(re.search(r"about ([\d.]+) minutes on 2 cores;", help_text).group(1))
    full = int(re.search(r"the full demo about (\d+) minutes", help_text).group(1))
    readme = " ".join((Path(cli.__file__).parents[2] / "README.md").read_text().split())
    assert f"`forensics demo --quick` is the same pipeline, smaller, in about {quick:g} minutes" \
        in readme
    assert f"runs `forensics demo` (about {full} min on 2 cores)" in readme
    measured_full = re.search(r"the full demo took (\d+) min (\d+) s wall", readme)
    measured_quick = re.search(r"`--quick` (\d+) min (\d+) s wall \(start to end", readme)
    assert round(int(measured_full[1]) + int(measured_full[2]) / 60) == full
    assert round((int(measured_quick[1]) + int(measured_quick[2]) / 60) * 2) / 2 == quick
    assert "under 10 min" not in readme
