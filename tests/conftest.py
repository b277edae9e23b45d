"""Shared fixtures: the quick demo, run once per test session through the real command line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

FORENSICS = str(Path(sys.executable).with_name("forensics"))


def run_cli(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed ``forensics`` console script and return its completed process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([FORENSICS, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"forensics {' '.join(map(str, args))} failed "
                             f"({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """Output folder and log of `forensics demo --quick`."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    proc = run_cli("demo", "--quick", "--out", out, "-q")
    return out, proc.stdout
