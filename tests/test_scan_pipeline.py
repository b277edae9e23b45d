"""The scan pipeline's speed measures change how it runs, never what it scores: decoding ahead,
decoding and scoring small groups on worker threads, CNN batches bounded by activation size, the
channels_last scoring copy, the process-wide thread and allocator settings, lazy imports."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from conftest import FORENSICS, run_cli
from crashsafe.images import header_pixels, save_png
from crashsafe.runtime import keep_freed_memory, keeps_freed_memory, set_threads
from forensics.cli import build_parser
from forensics.detectors import create_detector
from forensics.detectors.cnn import _peak_activation_per_pixel
from forensics.fold_batchnorm import fold_batch_norms
from forensics.scoring import decode_batches, score_files

RNG = np.random.default_rng(7)


def images(n: int, side: int = 48) -> list[np.ndarray]:
    return [RNG.integers(0, 256, (side, side + 8, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def spectral():
    real = images(20)
    fake = [np.repeat(np.repeat(i[::2, ::2], 2, 0), 2, 1) for i in images(20)]
    return create_detector("spectral").fit(real + fake, [0] * 20 + [1] * 20)


@pytest.fixture(scope="module")
def cnn():
    return create_detector("cnn", epochs=1, steps_per_epoch=1, batch_size=4, tile_size=64,
                           progress=False).fit(images(8), [0, 1] * 4)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Eleven images of three sizes with three broken files among them."""
    root = tmp_path_factory.mktemp("scan")
    paths = []
    for k, image in enumerate(images(4) + images(4, side=100) + images(3, side=130)):
        paths.append(root / f"{k:02d}.png")
        save_png(image, paths[-1])
        if k in (2, 6, 9):
            paths.append(root / f"{k:02d}-broken.png")
            paths[-1].write_bytes(b"not an image" * k)
    return paths


@pytest.mark.parametrize("kind, tolerance", [("spectral", 1e-12), ("cnn", 1e-5)])
def test_scores_do_not_depend_on_workers_or_batch_size(kind, tolerance, request, folder):
    """Exactly for features; a CNN's float sums vary in the last digits with the batch."""
    detector = request.getfixturevalue(kind)
    reference = score_files(folder, detector, batch_size=64, workers=1, progress=False)
    for batch_size, workers in ((1, 1), (3, 2), (5, 3)):
        rows = score_files(folder, detector, batch_size=batch_size, workers=workers,
                           progress=False)
        assert [r.path for r in rows] == folder  # in the given order, broken files in place
        assert [bool(r.error) for r in rows] == [bool(r.error) for r in reference]
        assert [r.p_fake for r in rows] == pytest.approx([r.p_fake for r in reference],
                                                         abs=tolerance)
    assert [r.path.name for r in reference if r.error] == [
        "02-broken.png", "06-broken.png", "09-broken.png"]


def test_cnn_scan_matches_predict_proba_whatever_the_batching(cnn, folder):
    good = [p for p in folder if "broken" not in p.name]
    rows = score_files(good, cnn, progress=False)
    from crashsafe.images import load_image

    decoded = [load_image(p) for p in good]
    # One image per call: no batch shares tiles of two images; the training layout, not the
    # channels_last scoring copy.
    one_by_one = [float(cnn.proba_from_logits(cnn.logits([i], cnn.network_))[0]) for i in decoded]
    assert [r.p_fake for r in rows] == pytest.approx(one_by_one, abs=1e-4)


def test_decoded_pixels_held_at_once_stay_within_the_budget(tmp_path, monkeypatch):
    """Batches come in file order; small images share batches, an image over the budget comes
    alone, and what is decoded at once (batch out with the caller + decodes ahead) stays within
    the budget (read from the headers), so a folder of huge photos holds one at a time."""
    import forensics.scoring as scoring

    sides = [8] * 30 + [40, 8, 90, 30, 30] + [8] * 3  # budget 2000 px: 40 and 90 px exceed half
    paths = []
    for k, side in enumerate(sides):
        save_png(np.full((side, side, 3), k, np.uint8), tmp_path / f"{k:03d}.png")
        paths.append(tmp_path / f"{k:03d}.png")
    os.mkfifo(tmp_path / "pipe.png")  # a pipe named like an image: reported, never blocks
    paths.insert(10, tmp_path / "pipe.png")
    started = []  # pixels of every decode begun
    real_decode = scoring._decode

    def tracked(path, limits):
        started.append(header_pixels(path))
        return real_decode(path, limits)

    monkeypatch.setattr(scoring, "_decode", tracked)
    batches, released = [], 0
    for batch in decode_batches(paths, batch_size=16, workers=2, pixel_budget=2000):
        in_batch = sum(img.shape[0] * img.shape[1] for _, img in batch if hasattr(img, "shape"))
        held = sum(started) - released  # this batch and the decodes begun ahead of it
        assert held <= 2000 or (len(batch) == 1 and held == in_batch), (held, batch)
        batches.append([p.name for p, _ in batch])
        released += in_batch
    assert [name for b in batches for name in b] == [p.name for p in paths]
    assert ["032.png"] in batches  # 90 x 90 = 8100 px: alone
    (only,) = list(decode_batches([tmp_path / "pipe.png"]))
    assert "not a regular file" in str(only[0][1])


def test_cpu_batches_are_bounded_by_the_largest_activation(cnn):
    per_pixel = _peak_activation_per_pixel(cnn.network_)
    assert per_pixel >= 3  # at least the input itself
    assert _peak_activation_per_pixel(cnn.network_) == per_pixel  # measured once


def test_scoring_copy_is_channels_last_and_follows_a_new_network(cnn):
    scoring = cnn._scoring_network()
    stem = next(p for p in scoring.parameters() if p.dim() == 4)
    assert stem.is_contiguous(memory_format=torch.channels_last) and not stem.is_contiguous()
    assert cnn._scoring_network() is scoring
    trained = next(p for p in cnn.network_.parameters() if p.dim() == 4)
    assert trained.is_contiguous()  # training's layout is left alone


class _Residual(nn.Module):
    """conv -> bn whose conv output is also added back: folding would change it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.norm(y) + y


def _trained_norms(network: nn.Module) -> nn.Module:
    """Batch norm statistics and affine terms away from their initial identity."""
    with torch.no_grad():
        for norm in network.modules():
            if isinstance(norm, nn.modules.batchnorm._BatchNorm):
                for tensor in (norm.running_mean, norm.weight, norm.bias):
                    tensor.uniform_(-1, 1)
                norm.running_var.uniform_(0.5, 2)
    return network.eval()


def test_batch_norms_fold_into_convolutions_where_that_scores_the_same(cnn):
    probe, x = torch.rand(1, 3, 32, 32), torch.rand(4, 3, 40, 40)
    plain = _trained_norms(nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8),
                                         nn.ReLU(), nn.Conv2d(8, 4, 3), nn.BatchNorm2d(4)))
    folded = fold_batch_norms(plain, probe)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())  # a copy was folded
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), plain(x), rtol=1e-5, atol=1e-5)
    residual = _trained_norms(_Residual())
    assert fold_batch_norms(residual, probe) is residual
    # timm's BatchNormAct2d keeps its activation; the scoring copy has no batch norm left
    scoring = cnn._scoring_network()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in scoring.modules())
    pictures = images(3, side=64)
    np.testing.assert_allclose(cnn.logits(pictures), cnn.logits(pictures, cnn.network_),
                               rtol=1e-4, atol=1e-4)


def test_only_detectors_without_torch_score_in_threads(spectral, cnn):
    assert spectral.scores_in_threads and not cnn.scores_in_threads
    both = create_detector("ensemble", members=["spectral:fft", "cnn"])
    both.members_ = {"spectral": spectral, "cnn": cnn}
    assert not both.scores_in_threads
    both.members_ = {"spectral": spectral}
    assert both.scores_in_threads


def test_threads_setting():
    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
        set_threads(None)  # leaves it
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="at least 1"):
        set_threads(0)


def test_freed_memory_setting_is_reported():
    took = keep_freed_memory()
    assert isinstance(took, bool) and keeps_freed_memory() == took


def test_cli_takes_threads_on_every_command(tmp_path, folder):
    assert build_parser().parse_args(["scan", "x", "--threads", "2"]).threads == 2
    assert build_parser().parse_args(["zoo", "list"]).threads is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["scan", "x", "--threads", "0"])
    run_cli("scan", folder[0], "--threads", "1", "--out", tmp_path / "r.jsonl", "--format",
            "jsonl", "-q")
    (line,) = (tmp_path / "r.jsonl").read_text().splitlines()
    assert 0 <= json.loads(line)["p_fake"] <= 1


def test_scan_and_evaluate_under_torchrun_write_what_one_process_writes(tmp_path, spectral):
    corpus = tmp_path / "corpus"
    for k, image in enumerate(images(7)):
        save_png(image, corpus / "real" / f"r{k}.png")
        save_png(np.repeat(np.repeat(image[::2, ::2], 2, 0), 2, 1),
                 corpus / "fake" / "upsampler" / f"f{k}.png")
    (corpus / "fake" / "upsampler" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    bundle = spectral.save(tmp_path / "bundle")
    two_ranks = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc_per_node", "2", "-m", "forensics.cli"]
    outputs = {}
    for name, prefix in (("one", [FORENSICS]), ("two", two_ranks)):
        for command in (["scan", corpus, "--out", tmp_path / f"{name}.csv"],
                        ["evaluate", "--corpus", corpus, "--out", tmp_path / f"{name}.json"]):
            proc = subprocess.run([*prefix, *map(str, command), "--detector", str(bundle),
                                   "--batch-size", "3", "-q"],
                                  capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            outputs.setdefault(name, []).append(proc.stdout)
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "two.csv").read_bytes()
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one == two and one["n_images"] == 15 and len(one["errors"]) == 1
    # rank 0 alone prints, the same lines but for the output file's name
    assert outputs["one"] == [text.replace("two.", "one.") for text in outputs["two"]]


_LOADED = """
import sys
from forensics.cli import main
main(sys.argv[1:])
print(sorted(m for m in ("torch", "timm", "scipy.signal") if m in sys.modules))
"""


def test_scan_start_up_imports_only_what_scoring_needs(tmp_path, spectral, folder):
    """Start-up is mostly imports: torch and timm (CNN kinds only) cost several seconds.
    scikit-learn (about a second) comes with every detector, which is a BaseEstimator."""
    bundle = spectral.save(tmp_path / "spectral")
    for detector, expected in (([], "['timm', 'torch']"), (["--detector", str(bundle)], "[]")):
        proc = subprocess.run([sys.executable, "-c", _LOADED, "scan", str(folder[0]), *detector,
                               "--out", str(tmp_path / "r.csv"), "-q"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[-1] == expected
