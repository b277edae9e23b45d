"""Shared fixtures: the quick demo, run once per test session through the real command line,
and the size of the reliability campaign (``pytest --campaign long`` for the opt-in long run)."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

FORENSICS = str(Path(sys.executable).with_name("forensics"))
KILLS = {"sent": 0}


@dataclass(frozen=True)
class Campaign:
    """How hard the reliability tests push: decoder fuzzing examples, kill -9 per
    interrupted-run test."""

    name: str
    fuzz_examples: int
    kills: int


CAMPAIGNS = {
    "ci": Campaign("ci", fuzz_examples=1000, kills=3),
    "long": Campaign("long", fuzz_examples=20000, kills=12),
}


def pytest_addoption(parser):
    parser.addoption("--campaign", choices=sorted(CAMPAIGNS), default="ci",
                     help="size of the reliability campaign: 'ci' (default) or 'long' "
                          "(20x the decoder fuzzing, 4x the kill -9 runs)")


@pytest.fixture(scope="session")
def campaign(request) -> Campaign:
    return CAMPAIGNS[request.config.getoption("campaign")]


def pytest_terminal_summary(terminalreporter):
    if KILLS["sent"]:
        terminalreporter.write_line(f"kill -9 sent to {KILLS['sent']} forensics processes")


# For CLI processes that run side by side on the 2 cores, each on one thread.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_cli(*args: str, check: bool = True, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``forensics`` console script (``env``: variables to add) and return
    its completed process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run([FORENSICS, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"forensics {' '.join(map(str, args))} failed "
                             f"({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def write_small_wild_folder(folder: Path) -> Path:
    """A CNNDetection-layout folder standing in for images from elsewhere: 128 px crops of the
    bundled test photos (real) and the same crops 2x nearest-upsampled from half size (fake)."""
    import numpy as np

    from forensics.bundled import SOURCE_PHOTOS
    from crashsafe.images import load_image, save_png

    for k, photo in enumerate(p for p in SOURCE_PHOTOS if p.split == "test"):
        crop = load_image(photo.path())[:128, :128]
        save_png(crop, folder / "group" / "0_real" / f"{k}.png")
        save_png(np.repeat(np.repeat(crop[::2, ::2], 2, 0), 2, 1),
                 folder / "group" / "1_fake" / f"{k}.png")
    return folder


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """Output folder and log of `forensics demo --quick --wild` (a small stand-in folder)."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    wild = write_small_wild_folder(tmp_path_factory.mktemp("wild"))
    proc = run_cli("demo", "--quick", "--out", out, "--wild", wild, "-q")
    return out, proc.stdout


def start_cli(args, env: dict[str, str] | None = None, log: Path | None = None
              ) -> subprocess.Popen:
    """`forensics *args` started in the background; its stderr goes to ``log`` (or nowhere)."""
    stderr = subprocess.DEVNULL if log is None else open(log, "w")
    try:
        return subprocess.Popen([FORENSICS, *map(str, args)], stdout=subprocess.DEVNULL,
                                stderr=stderr, env={**os.environ, **(env or {})})
    finally:
        if log is not None:
            stderr.close()


def kill_when(args, ready, *, timeout=120.0, poll=0.005, env=None) -> None:
    """Start `forensics *args`, wait until ``ready()`` holds (checked every ``poll`` seconds),
    then SIGKILL it."""
    proc = start_cli(args, env)
    try:
        deadline = time.monotonic() + timeout
        while not ready() and proc.poll() is None:
            assert time.monotonic() < deadline, f"no progress within {timeout} s: {args}"
            time.sleep(poll)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    KILLS["sent"] += 1


def kill_or_finish(args, ready) -> None:
    """kill_when, where a run that finishes before ``ready()`` holds is also fine."""
    try:
        kill_when(args, ready)
    except AssertionError as exc:
        if "ended before" not in str(exc):
            raise


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs, no except-Exception catches it."""


def crash_after(monkeypatch, module, name: str, calls: int) -> None:
    """Make ``module.name`` die on its call number ``calls`` (0-based)."""
    real, seen = getattr(module, name), [0]

    def dying(*args, **kwargs):
        seen[0] += 1
        if seen[0] > calls:
            raise Crash()
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, dying)
