"""`detector train` under torchrun (issue 13 item 7): the CNN trains data-parallel with batch norm
synchronised over gloo, and 2 ranks train what 1 process trains."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from conftest import FORENSICS
from crashsafe.torchrun import world
from forensics.data_parallel import _synced_forward, data_parallel
from forensics.detectors import load_detector
from test_cnn_resume import CNN_SET
from test_spectral_detector import corpus, write_real_fake_folders


@pytest.fixture
def one_rank_group(tmp_path):
    """A process group of this process alone: every all-reduce is the identity."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    yield
    dist.destroy_process_group()


def test_synced_batch_norm_is_batch_norm(one_rank_group):
    """Output, gradients and running statistics of the synced forward equal torch's own."""
    torch.manual_seed(0)
    x = torch.randn(6, 4, 5, 7) * 3 + 1
    ours, theirs = nn.BatchNorm2d(4), nn.BatchNorm2d(4)
    with torch.no_grad():
        for norm in (ours, theirs):
            norm.weight.uniform_(0.5, 2.0)
            norm.bias.uniform_(-1.0, 1.0)
        theirs.load_state_dict(ours.state_dict())
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ours, out_theirs = _synced_forward(ours, x_ours), theirs(x_theirs)
    weights = torch.randn_like(out_ours)
    (out_ours * weights).sum().backward()
    (out_theirs * weights).sum().backward()
    torch.testing.assert_close(out_ours, out_theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, rtol=1e-4, atol=1e-5)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(theirs, name))


def test_one_process_trains_the_network_itself():
    assert world() == (0, 1)
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with data_parallel(network, torch.device("cpu")) as trainer:
        assert trainer is network


def test_two_ranks_train_what_one_process_trains(tmp_path):
    folders = write_real_fake_folders(tmp_path / "corpus", 12, 32, 3, "upsampler")
    two_ranks = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc_per_node", "2", "-m", "forensics.cli"]
    printed = {}
    for name, prefix in (("one", [FORENSICS]), ("two", two_ranks)):
        proc = subprocess.run([*prefix, "detector", "train", "--kind", "cnn", "--corpus",
                               str(folders), "--out", str(tmp_path / name), *CNN_SET, "-q"],
                              capture_output=True, text=True, timeout=600,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        printed[name] = proc.stdout
    assert printed["one"].replace("/one", "/two") == printed["two"]  # rank 0 alone prints
    one, two = (load_detector(tmp_path / name) for name in ("one", "two"))
    history = [two.training_info_["history"], one.training_info_["history"]]
    assert [row["epoch"] for row in history[0]] == [row["epoch"] for row in history[1]]
    for a, b in zip(*history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    # Equal but for the order of float sums, which Adam turns into +-lr steps for the few
    # weights whose gradient is all rounding noise (a bias before a batch norm): 1e-4 here.
    images = corpus(5, 16, [(32, 32), (48, 40)])[0]
    np.testing.assert_allclose(two.predict_proba(images), one.predict_proba(images), atol=2e-3)
    manifest = json.loads((tmp_path / "two" / "detector.json").read_text())
    assert manifest["kind"] == "cnn"
