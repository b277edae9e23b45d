"""Upsampler autoencoders in the zoo: every upsampler at any size, tiles, random crops at
native resolution, training, exact resume, and reconstructions of sources through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from forensics.cli import main as forensics_main
from forensics.corpus import split_for
from generators import checkpoint_sha256, read_stats, train_gan
from generators.data import RandomCropDataset
from generators.nets.autoencoder import UPSAMPLERS
from generators.registry import create_generator
from generators_support import one_thread, write_blob_images  # noqa: F401 (fixture)

TINY = {"resolution": 16, "stages": 2, "channels": (8, 8, 8), "ndf": 8, "n_layers_d": 2,
        "batch_size": 4}


def tiny_autoencoder(**overrides):
    torch.manual_seed(0)
    return create_generator("autoencoder", **{**TINY, **overrides}).generator.eval()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_blob_images(tmp_path_factory.mktemp("photos"), n=12, size=32)


@pytest.mark.parametrize("upsample", sorted(UPSAMPLERS))
def test_every_upsampler_reconstructs_odd_sizes_to_the_exact_size(upsample):
    model = tiny_autoencoder(upsample=upsample, stages=3, channels=(4, 8, 8, 8))
    with torch.inference_mode():
        for height, width in ((37, 53), (5, 3), (16, 16)):
            out = model(torch.rand(2, 3, height, width) * 2 - 1)
            assert out.shape == (2, 3, height, width)
            assert out.abs().max() <= 1


@pytest.mark.parametrize("upsample", ["bicubic", "convT4_blur", "pixelshuffle"])
def test_tiles_give_the_whole_image_reconstruction(upsample):
    """The halo covers the receptive field of the widest-reaching upsamplers (bicubic, the
    blurred transposed conv), so tiles meet without seams."""
    model = tiny_autoencoder(upsample=upsample, stages=3, channels=(4, 4, 4, 4))
    image = torch.rand(1, 3, 2 * model.halo + 45, 2 * model.halo + 27) * 2 - 1
    with torch.inference_mode():
        whole, tiled = model(image), model(image, tile=16)
    assert torch.allclose(whole, tiled, atol=1e-5)


def test_config_errors_name_the_option_and_the_fix():
    with pytest.raises(ValueError, match=r"upsample='lanczos'.*convT4_blur"):
        create_generator("autoencoder", upsample="lanczos")
    with pytest.raises(ValueError, match=r"'channels' must list at least stages \+ 1 = 5"):
        create_generator("autoencoder", stages=4, channels=(8, 8))
    with pytest.raises(ValueError, match="too small for a PatchGAN.*adv_weight=0"):
        create_generator("autoencoder", **{**TINY, "n_layers_d": 3})
    pair = create_generator("autoencoder", **{**TINY, "n_layers_d": 3, "adv_weight": 0})
    assert pair.net_names == ("generator",)  # no discriminator without an adversarial term


def test_training_crops_are_cut_at_native_resolution(tmp_path):
    big = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "big.png")
    Image.fromarray(big[:10, :10]).save(tmp_path / "small.png")
    with pytest.warns(UserWarning, match="smaller than the 16 px training crops"):
        dataset = RandomCropDataset([tmp_path / "big.png", tmp_path / "small.png"], 16)
    assert dataset.paths == [tmp_path / "big.png"]
    torch.manual_seed(0)
    crops = dataset.training_batch(torch.zeros(8, dtype=torch.int64))
    pixels = ((crops + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    offsets = set()
    for crop in pixels:  # each crop is a window of the image as it is
        found = [(y, x) for y in range(40 - 15) for x in range(50 - 15)
                 if np.array_equal(big[y:y + 16, x:x + 16], crop)]
        assert found
        offsets.add(found[0])
    assert len(offsets) > 1
    centre = ((dataset.batch(torch.tensor([0]))[0] + 1) * 127.5).round().byte()
    assert np.array_equal(centre.permute(1, 2, 0).numpy(), big[12:28, 17:33])


def test_short_training_lowers_the_reconstruction_loss(photos, tmp_path):
    train_gan("autoencoder", photos, tmp_path / "run", steps=30, device="cpu", progress=False,
              diagnostics_every=0, config_overrides={**TINY, "lr": 2e-3})
    l1 = [row["l1"] for row in read_stats(tmp_path / "run")]
    assert np.mean(l1[-5:]) < 0.6 * np.mean(l1[:5]), l1
    assert {"loss_d", "loss_g_gan", "d_real", "d_fake"} <= set(read_stats(tmp_path / "run")[-1])


def test_resume_gives_the_weights_of_an_uninterrupted_run(photos, tmp_path):
    options = {"device": "cpu", "progress": False, "diagnostics_every": 0, "seed": 3,
               "config_overrides": {**TINY, "upsample": "pixelshuffle"}}
    train_gan("autoencoder", photos, tmp_path / "whole", steps=4, **options)
    train_gan("autoencoder", photos, tmp_path / "split", steps=2, **options)
    result = train_gan("autoencoder", photos, tmp_path / "split", steps=4, resume=True,
                       **options)
    assert (result.start_step, result.step) == (2, 4)
    documents = [json.loads((tmp_path / run / "config.json").read_text())
                 for run in ("whole", "split")]
    assert documents[0]["files"] == documents[1]["files"]  # weights, optimizers, RNG, data
    assert checkpoint_sha256(tmp_path / "whole") == checkpoint_sha256(tmp_path / "split")


def test_cli_reconstructs_every_source_at_its_size_with_its_split(photos, tmp_path, capsys):
    run, fakes, source = tmp_path / "run", tmp_path / "fakes", tmp_path / "source"
    settings = [arg for key, value in TINY.items() if key != "stages"
                for arg in ("--set", f"{key}={json.dumps(value)}")]
    assert forensics_main(["zoo", "train", "autoencoder", "--data", str(photos[0].parent),
                           "--out", str(run), "--steps", "2", "--set", "upsample=convT4",
                           "--set", "stages=2", *settings, "-q"]) == 0
    sizes = {"a.png": (37, 53), "b.jpg": (20, 31), "sub/c.png": (64, 48)}
    rng = np.random.default_rng(0)
    for rel, (height, width) in sizes.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
            source / rel)
    command = ["zoo", "sample", str(run), "--source", str(source), "--out", str(fakes), "-q"]
    assert forensics_main(command) == 0
    rows = [json.loads(line) for line in (fakes / "manifest.jsonl").read_text().splitlines()]
    assert {row["path"]: Path(row["source"]).relative_to(source).as_posix() for row in rows} \
        == {"a.png": "a.png", "b.png": "b.jpg", "sub/c.png": "sub/c.png"}
    for row in rows:
        rel = Path(row["source"]).relative_to(source).as_posix()
        assert row["split"] == split_for(rel)
        assert (row["generator"], row["label"], row["resolution"]) == \
            ("autoencoder-convT4-x4", "fake", None)
        assert row["checkpoint_sha256"] == checkpoint_sha256(run)
        with Image.open(fakes / row["path"]) as image:
            assert image.format == "PNG" and image.size[::-1] == sizes[rel]
    assert forensics_main(command) == 0  # a rerun finds every image written
    assert len((fakes / "manifest.jsonl").read_text().splitlines()) == 3
    capsys.readouterr()
    assert forensics_main(["zoo", "sample", str(run), "--n", "2", "--out",
                           str(tmp_path / "none"), "-q"]) == 2
    assert "reconstructs real images: give a source folder (--source DIR)" in \
        capsys.readouterr().err


def test_latent_families_still_refuse_a_source(photos, tmp_path, capsys):
    run = tmp_path / "dcgan"
    train_gan("dcgan", photos, run, steps=1, device="cpu", progress=False, diagnostics_every=0,
              config_overrides={"resolution": 16, "ngf": 4, "ndf": 4, "nz": 8, "batch_size": 4})
    assert forensics_main(["zoo", "sample", str(run), "--source", str(photos[0].parent),
                           "--out", str(tmp_path / "fakes"), "-q"]) == 2
    assert "--source is only for translation and reconstruction families" in \
        capsys.readouterr().err
    assert forensics_main(["zoo", "list"]) == 0
    assert "autoencoder (data: images; random R x R crops at native resolution" in \
        capsys.readouterr().out
