"""Conditional DCGAN: conditioned nets, classes from folders or a manifest, per-class samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from forensics.cli import main as cli
from generators import create_generator, load_checkpoint, sample_images, train_gan
from generators.sampling import generate
from generators_support import TINY, one_thread, write_class_folders  # noqa: F401 (fixture)

COLOURS = {"blue": (30, 60, 220), "red": (220, 40, 30)}


@pytest.fixture(scope="module")
def class_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("classes")
    write_class_folders(root, COLOURS, n=16)
    return root


@pytest.fixture(scope="module")
def trained(class_root, tmp_path_factory):
    """200 steps on red and blue images, through the command line."""
    run = tmp_path_factory.mktemp("cgan") / "run"
    assert cli(["zoo", "train", "cgan", "--data", str(class_root), "--out", str(run),
                "--steps", "200", "--resolution", "16", "--batch-size", "16", "--set", "ngf=16",
                "--set", "ndf=16", "--set", "nz=16", "--device", "cpu", "-q"]) == 0
    return run


@pytest.mark.parametrize("resolution", [16, 32])
def test_conditional_nets_use_the_class(resolution):
    torch.manual_seed(0)
    pair = create_generator("cgan", resolution=resolution, ngf=8, ndf=8, num_classes=3)
    pair.eval()
    z = torch.randn(4, 100).repeat(2, 1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    images = pair.generator(z, labels)
    assert images.shape == (8, 3, resolution, resolution)
    assert not torch.equal(images[0], images[1])  # same z, other class, other image
    logits = pair.discriminator(images, labels)
    assert logits.shape == (8,)
    assert not torch.equal(logits, pair.discriminator(images, (labels + 1) % 3))
    with pytest.raises(ValueError, match="class indices"):
        pair.generator(z)


def test_classes_come_from_subfolders_and_are_learned(trained):
    pair, document = load_checkpoint(trained)
    assert document["extra"]["classes"] == ["blue", "red"]
    assert document["config"]["num_classes"] == 2
    seeds = range(16)
    blue, red = (generate(pair.generator, seeds, torch.device("cpu"),
                          labels=torch.full((16,), k)).mean((0, 2, 3)) for k in (0, 1))
    # Red samples are redder and less blue than blue ones: the label steers G (eval mode:
    # in a one-class batch, training-mode BatchNorm would normalise the class shift away).
    assert red[0] - blue[0] > 0.05 and blue[2] - red[2] > 0.05


def test_sampling_one_class_or_cycling(trained, tmp_path, capsys):
    rows = sample_images(trained, 4, tmp_path / "cycle", seed=0, device="cpu", progress=False)
    assert [row["class"] for row in rows] == ["blue", "red", "blue", "red"]
    assert [row["path"] for row in rows][:2] == ["seed000000.png", "seed000001.png"]
    assert cli(["zoo", "sample", str(trained), "--n", "3", "--out", str(tmp_path / "red"),
                "--class", "red", "--seed", "5", "--device", "cpu", "-q"]) == 0
    manifest = [json.loads(line) for line in (tmp_path / "red" / "manifest.jsonl").open()]
    assert [(row["path"], row["class"]) for row in manifest] == [
        (f"red/seed{s:06d}.png", "red") for s in (5, 6, 7)]
    with Image.open(tmp_path / "red" / "red" / "seed000005.png") as image:
        pixels = np.asarray(image, np.float64)
    assert pixels[..., 0].mean() > pixels[..., 2].mean()
    assert cli(["zoo", "sample", str(trained), "--n", "1", "--out", str(tmp_path / "x"),
                "--class", "green", "-q"]) == 2
    assert "not one of the 2 classes" in capsys.readouterr().err


def test_classes_from_a_manifest_field(tmp_path):
    corpus = tmp_path / "corpus"
    assert cli(["corpus", "bundled", str(corpus), "--size", "16", "--count", "24", "-q"]) == 0
    run = tmp_path / "run"
    assert cli(["zoo", "train", "cgan", "--data", str(corpus), "--class-key", "source",
                "--out", str(run), "--steps", "1", "--resolution", "16", "--batch-size", "4",
                "--set", "ngf=4", "--set", "ndf=4", "--device", "cpu", "-q"]) == 0
    sources = {json.loads(line)["source"] for line in (corpus / "manifest.jsonl").open()
               if json.loads(line)["split"] == "train"}
    assert load_checkpoint(run)[1]["extra"]["classes"] == sorted(sources)


def test_unconditional_families_refuse_a_class(tmp_path):
    torch.manual_seed(0)
    items = write_class_folders(tmp_path / "d", {"a": (0, 0, 0)}, n=4)
    run = train_gan("dcgan", [p for p, _ in items], tmp_path / "run", steps=1,
                    config_overrides=TINY, device="cpu", progress=False).run_dir
    with pytest.raises(ValueError, match="not conditional"):
        sample_images(run, 1, tmp_path / "out", class_name="a", device="cpu", progress=False)
    with pytest.raises(ValueError, match="no truncation"):
        sample_images(run, 1, tmp_path / "out", truncation=0.5, device="cpu", progress=False)
    with pytest.raises(ValueError, match="only for translation"):
        sample_images(run, 1, tmp_path / "out", source=tmp_path, device="cpu", progress=False)
