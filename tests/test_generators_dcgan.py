"""DCGAN in the generator zoo: registry, nets, data, training, checkpoints and sampling."""

from __future__ import annotations

import json
import pathlib
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import SafetensorError

from crashsafe.runtime import seed_everything
from generators import (checkpoint_sha256, create_generator, list_generators, load_checkpoint,
                        read_stats, sample_images, save_checkpoint, train_gan)
from generators.checkpoint import CheckpointError
from generators.data import ImageFolderDataset
from generators.images import image_grid
from generators.losses import get_loss
from generators.sampling import seed_latents
from generators.trainer import plot_training_curves
from bundle_support import rehash_checkpoint
from generators_support import one_thread, write_blob_images  # noqa: F401 (fixture)

SMALL = {"resolution": 32, "ngf": 16, "ndf": 16, "batch_size": 16}
TRAIN_STEPS = 100


@pytest.fixture(scope="module")
def blob_paths(tmp_path_factory):
    return write_blob_images(tmp_path_factory.mktemp("blobs"))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, blob_paths):
    run_dir = tmp_path_factory.mktemp("dcgan") / "run"
    result = train_gan("dcgan", blob_paths, run_dir, steps=TRAIN_STEPS, seed=0, device="cpu",
                       config_overrides=SMALL, sample_every=50, checkpoint_every=50,
                       progress=False)
    assert result.run_dir == run_dir and result.step == TRAIN_STEPS and result.stopped is None
    return run_dir


def pixels(path: pathlib.Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), np.int16)


def mean_colour(generator: torch.nn.Module) -> np.ndarray:
    generator.eval()
    with torch.no_grad():
        return generator(seed_latents(range(64), generator.z_dim)).mean((0, 2, 3)).numpy()


# --- registry and networks -------------------------------------------------------------------


def test_registry_lists_dcgan_with_small_data_defaults():
    defaults = list_generators()["dcgan"]  # the paper's nets; batch, lr and EMA for small data
    assert defaults == {"resolution": 64, "nz": 100, "ngf": 64, "ndf": 64, "lr": 5e-4,
                        "lr_d": None, "betas": (0.5, 0.999), "batch_size": 16,
                        "loss": "nonsaturating", "gp_weight": 10.0, "r1_gamma": 0.0,
                        "r1_every": 16, "spectral_norm": False, "d_norm": "batch",
                        "ema_beta": 0.995, "ema_rampup": True, "diffaugment": ""}
    defaults["nz"] = 1  # a copy: the registry is unchanged
    assert list_generators()["dcgan"]["nz"] == 100


def test_create_generator_merges_overrides_and_rejects_unknown_keys():
    pair = create_generator("dcgan", resolution=32, ngf=8, betas=[0.0, 0.99])
    assert pair.config["resolution"] == 32 and pair.config["ndf"] == 64
    assert pair.config["betas"] == (0.0, 0.99)  # JSON lists read back as tuples
    with pytest.raises(ValueError, match="valid keys.*ngf"):
        create_generator("dcgan", n_filters=8)
    with pytest.raises(ValueError, match="registered.*dcgan"):
        create_generator("no-such-gan")
    for resolution in (8, 48, 100):
        with pytest.raises(ValueError, match="power of two"):
            create_generator("dcgan", resolution=resolution)
    with pytest.raises(ValueError, match="loss"):
        create_generator("dcgan", loss="wasserstein")


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_forward_shapes(resolution):
    pair = create_generator("dcgan", resolution=resolution, ngf=8, ndf=8)
    z = torch.randn(3, 100)
    images = pair.generator(z)
    assert images.shape == (3, 3, resolution, resolution)
    assert images.abs().max() <= 1  # tanh output
    assert torch.equal(pair.generator.eval()(z), pair.generator(z[:, :, None, None]))
    assert pair.discriminator(images).shape == (3,)


def test_64px_layout_matches_pytorch_examples():
    pair = create_generator("dcgan")
    g_convs = [m for m in pair.generator.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    d_convs = [m for m in pair.discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in g_convs] == [
        (100, 512), (512, 256), (256, 128), (128, 64), (64, 3)]
    assert [(m.in_channels, m.out_channels) for m in d_convs] == [
        (3, 64), (64, 128), (128, 256), (256, 512), (512, 1)]
    assert [m.stride for m in g_convs] == [(1, 1)] + [(2, 2)] * 4
    assert [m.stride for m in d_convs] == [(2, 2)] * 4 + [(1, 1)]
    d_layers = [*pair.discriminator.features, pair.discriminator.head]
    assert isinstance(d_layers[1], torch.nn.LeakyReLU)  # no BatchNorm after the first conv
    assert not isinstance(d_layers[-1], (torch.nn.Sigmoid, torch.nn.LeakyReLU))  # a raw logit
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in pair.discriminator.modules()) == 3
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in pair.generator.modules()) == 4


def test_weight_init_statistics():
    torch.manual_seed(0)
    pair = create_generator("dcgan")
    for module in pair.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            weight = module.weight.detach()
            if weight.numel() >= 10_000:
                assert weight.std().item() == pytest.approx(0.02, rel=0.05)
                assert abs(weight.mean().item()) < 0.002
        elif isinstance(module, torch.nn.BatchNorm2d):
            assert module.weight.detach().mean().item() == pytest.approx(1.0, abs=0.01)
            assert 0.01 < module.weight.detach().std().item() < 0.03
            assert torch.count_nonzero(module.bias) == 0


def test_nonsaturating_loss_is_bce_with_logits():
    loss = get_loss("nonsaturating")
    real, fake = torch.randn(8), torch.randn(8)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected_d = bce(real, torch.ones(8)) + bce(fake, torch.zeros(8))
    assert loss.discriminator(real, fake).item() == pytest.approx(expected_d.item(), rel=1e-6)
    assert loss.generator(fake).item() == pytest.approx(bce(fake, torch.ones(8)).item(), rel=1e-6)
    with pytest.raises(ValueError, match="nonsaturating"):
        get_loss("hinge?")


# --- data ------------------------------------------------------------------------------------


def test_dataset_resizes_crops_scales_and_skips_unreadable(tmp_path):
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, 10:70] = 255  # white centre, black sides that the centre crop removes
    Image.fromarray(wide).save(tmp_path / "wide.png")
    Image.new("L", (20, 30), 0).save(tmp_path / "grey.jpg")  # upscaled and made RGB
    Image.new("RGBA", (32, 32), (255, 0, 0, 128)).save(tmp_path / "rgba.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "notes.txt").write_text("not an image")
    names = ["wide.png", "broken.png", "grey.jpg", "notes.txt", "rgba.png"]
    with pytest.warns(UserWarning, match="skipped 2 of 5"):
        dataset = ImageFolderDataset([tmp_path / n for n in names], 16)
    assert len(dataset) == 3
    assert [p.name for p in dataset.paths] == ["wide.png", "grey.jpg", "rgba.png"]
    assert sorted(p.name for p, _ in dataset.skipped) == ["broken.png", "notes.txt"]
    wide_item, grey_item, rgba_item = dataset[0], dataset[1], dataset[2]
    assert wide_item.shape == (3, 16, 16) and wide_item.dtype == torch.float32
    assert torch.all(wide_item == 1.0)
    assert torch.all(grey_item == -1.0)
    assert torch.equal(rgba_item[:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))


def test_dataset_with_no_readable_image_says_so(tmp_path):
    (tmp_path / "a.png").write_bytes(b"nope")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none of the 1 image"):
        ImageFolderDataset([tmp_path / "a.png"], 32)
    with pytest.raises(ValueError, match="no image paths"):
        ImageFolderDataset([], 32)


# --- training --------------------------------------------------------------------------------


def test_training_moves_generator_colours_to_the_data(trained_run, blob_paths):
    """The trained generator's mean colour heads for the data's (from ~0, far from it); a
    generator that did not learn, or learned the wrong thing, cannot pass."""
    data_mean = np.mean([pixels(p) / 127.5 - 1 for p in blob_paths], axis=(0, 1, 2))
    seed_everything(0)
    initial = mean_colour(create_generator("dcgan", **SMALL).generator)
    trained = mean_colour(load_checkpoint(trained_run)[0].generator)
    start, end = np.linalg.norm(initial - data_mean), np.linalg.norm(trained - data_mean)
    assert start > 0.8  # the data is far from grey
    assert end < 0.75 * start
    step = trained - initial
    assert np.dot(step, data_mean - initial) / (np.linalg.norm(step) * start) > 0.9

    stats = read_stats(trained_run)
    assert [row["step"] for row in stats] == list(range(1, TRAIN_STEPS + 1))
    assert set(stats[0]) == {"step", "loss_d", "loss_g", "d_real", "d_fake", "skipped",
                             "seconds"}
    assert {"diversity_ratio", "nn_distinct", "nn_distinct_fraction"} <= set(stats[49])
    first, last = (np.mean([row["loss_d"] for row in part]) for part in (stats[:5], stats[-20:]))
    assert last < 0.6 * first  # D learns to separate the (easy) data from early fakes
    assert np.mean([row["d_real"] for row in stats[-20:]]) > 0.6


def test_run_folder_explains_itself(trained_run):
    document = json.loads((trained_run / "config.json").read_text())
    assert document["name"] == "dcgan" and document["step"] == TRAIN_STEPS
    assert document["version"] == 2
    assert document["config"] == {**list_generators()["dcgan"], **SMALL, "betas": [0.5, 0.999]}
    assert document["extra"]["training"]["seed"] == 0
    assert document["extra"]["dataset"] == {"num_images": 64, "skipped_images": 0}
    with Image.open(trained_run / "samples.png") as grid:
        assert grid.size == (8 * 34 + 2, 8 * 34 + 2) and grid.mode == "RGB"
    with Image.open(trained_run / "curves.png") as curves:
        assert curves.size[0] >= 600
    assert (trained_run / "samples_000050.png").exists()
    assert (trained_run / "optim.safetensors").exists()
    assert not list(trained_run.glob(".*.tmp"))  # no temp files left over


def test_training_is_reproducible_from_its_seed(tmp_path, blob_paths):
    runs = [train_gan("dcgan", blob_paths[:20], tmp_path / name, steps=3, seed=7, device="cpu",
                      config_overrides=SMALL, progress=False).run_dir for name in ("a", "b")]
    assert checkpoint_sha256(runs[0]) == checkpoint_sha256(runs[1])
    other = train_gan("dcgan", blob_paths[:20], tmp_path / "c", steps=3, seed=8, device="cpu",
                      config_overrides=SMALL, progress=False).run_dir
    assert checkpoint_sha256(other) != checkpoint_sha256(runs[0])


def test_small_dataset_uses_its_size_as_batch(tmp_path, blob_paths):
    run = train_gan("dcgan", blob_paths[:5], tmp_path / "run", steps=2, device="cpu",
                    config_overrides=SMALL, progress=False).run_dir
    assert json.loads((run / "config.json").read_text())["extra"]["training"]["batch_size"] == 5


def test_plot_training_curves_accepts_missing_values(tmp_path):
    stats = [{"step": i, "loss_d": None if i == 3 else 1.0 / i, "loss_g": 1.0, "d_real": 0.7,
              "d_fake": 0.3, **({"diversity_ratio": 0.9, "nn_distinct_fraction": 0.5}
                                if i % 10 == 0 else {})} for i in range(1, 80)]
    plot_training_curves(stats, tmp_path / "curves.png")
    with Image.open(tmp_path / "curves.png") as curves:
        assert curves.format == "PNG"


# --- checkpoints -----------------------------------------------------------------------------


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    pair = create_generator("dcgan", resolution=32, ngf=8, ndf=8)
    pair.generator(torch.randn(4, 100))  # move BatchNorm running stats off their defaults
    save_checkpoint(tmp_path / "ckpt", pair, step=12, extra_config={"note": "test"})
    loaded, document = load_checkpoint(tmp_path / "ckpt")
    assert document["step"] == 12 and document["extra"] == {"note": "test"}
    assert loaded.config == pair.config and loaded.name == "dcgan"
    save_checkpoint(tmp_path / "again", loaded, step=12, extra_config={"note": "test"})
    assert checkpoint_sha256(tmp_path / "again") == checkpoint_sha256(tmp_path / "ckpt")
    z = torch.randn(5, 100)
    for mode in (False, True):
        pair.train(mode), loaded.train(mode)
        with torch.no_grad():
            assert torch.equal(pair.generator(z), loaded.generator(z))
            images = torch.rand(5, 3, 32, 32) * 2 - 1
            assert torch.equal(pair.discriminator(images), loaded.discriminator(images))


class _TouchOnUnpickle:
    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_load_rejects_a_pickle_payload_without_running_it(tmp_path):
    torch.manual_seed(0)
    save_checkpoint(tmp_path, create_generator("dcgan", resolution=16, ngf=4, ndf=4), step=0)
    marker = tmp_path / "payload-ran"
    payload = pickle.dumps({"G.net.0.weight": _TouchOnUnpickle(marker)})
    pickle.loads(payload)  # the payload is live: unpickling it runs code
    assert marker.exists()
    marker.unlink()
    (tmp_path / "weights.safetensors").write_bytes(payload)
    rehash_checkpoint(tmp_path)  # a consistent forgery
    with pytest.raises(CheckpointError, match="not a valid safetensors file") as caught:
        load_checkpoint(tmp_path)
    assert isinstance(caught.value.__cause__, SafetensorError)
    assert not marker.exists()


def test_load_checks_folder_and_weights(tmp_path):
    with pytest.raises(CheckpointError, match="config.json not found"):
        load_checkpoint(tmp_path)
    small = create_generator("dcgan", resolution=16, ngf=4, ndf=4)
    save_checkpoint(tmp_path / "a", small, step=0)
    save_checkpoint(tmp_path / "b", create_generator("dcgan", resolution=16, ngf=8, ndf=4), step=0)
    (tmp_path / "a" / "weights.safetensors").replace(tmp_path / "b" / "weights.safetensors")
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load_checkpoint(tmp_path / "b")
    document = json.loads((tmp_path / "b" / "config.json").read_text())
    del document["files"]  # a file without a recorded hash is refused: it cannot be checked
    (tmp_path / "b" / "config.json").write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="records no SHA-256 for weights.safetensors"):
        load_checkpoint(tmp_path / "b")
    rehash_checkpoint(tmp_path / "b", names=["weights.safetensors"])  # the shapes catch it
    with pytest.raises(CheckpointError, match="does not match the config"):
        load_checkpoint(tmp_path / "b")


# --- sampling --------------------------------------------------------------------------------


def test_sampling_writes_pngs_and_manifest(trained_run, tmp_path):
    out = tmp_path / "fakes"
    rows = sample_images(trained_run, 6, out, seed=10, batch_size=4, device="cpu",
                         progress=False)
    sha = checkpoint_sha256(trained_run)
    assert [row["seed"] for row in rows] == list(range(10, 16))
    assert rows[0] == {"path": "seed000010.png", "label": "fake", "generator": "dcgan",
                       "checkpoint": str(trained_run), "checkpoint_sha256": sha, "seed": 10,
                       "resolution": 32}
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert manifest == rows
    assert sorted(p.name for p in out.glob("*.png")) == [f"seed{s:06d}.png" for s in range(10, 16)]
    with Image.open(out / "seed000012.png") as image:
        assert image.size == (32, 32) and image.mode == "RGB"

    # A rerun changes nothing; an interrupted run (lost PNG, torn manifest line) is completed.
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    assert sample_images(trained_run, 6, out, seed=10, device="cpu", progress=False) == rows
    (out / "seed000013.png").unlink()
    with open(out / "manifest.jsonl", "a") as f:
        f.write('{"path": "seed0000')
    again = sample_images(trained_run, 8, out, seed=10, batch_size=3, device="cpu",
                          progress=False)
    assert [row["seed"] for row in again] == list(range(10, 18))
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(row["seed"] for row in manifest) == list(range(10, 18))  # no duplicates
    assert (out / "seed000013.png").read_bytes() == before["seed000013.png"]


def test_sampling_is_named_by_seed_not_batch(trained_run, tmp_path):
    one = sample_images(trained_run, 5, tmp_path / "one", seed=3, batch_size=1, device="cpu",
                        progress=False)
    five = sample_images(trained_run, 5, tmp_path / "five", seed=3, batch_size=5, device="cpu",
                         progress=False)
    same = sample_images(trained_run, 5, tmp_path / "same", seed=3, batch_size=5, device="cpu",
                         progress=False)
    other = sample_images(trained_run, 1, tmp_path / "other", seed=4, batch_size=1,
                          device="cpu", progress=False)
    for a, b, c in zip(one, five, same):
        assert (tmp_path / "five" / b["path"]).read_bytes() == \
            (tmp_path / "same" / c["path"]).read_bytes()
        # Batch size may change float rounding inside a convolution library, never the image.
        difference = pixels(tmp_path / "one" / a["path"]) - pixels(tmp_path / "five" / b["path"])
        assert np.abs(difference).max() <= 1
    # Seed 4 is the second image of the seed-3 runs, whatever it was drawn with.
    seed4 = pixels(tmp_path / "other" / other[0]["path"])
    assert np.abs(seed4 - pixels(tmp_path / "five" / five[1]["path"])).max() <= 1
    first, second = (pixels(tmp_path / "five" / row["path"]) for row in five[:2])
    assert np.abs(first - second).mean() > 1  # different seeds, different images


def test_training_grid_shows_seeds_0_to_63(trained_run, tmp_path):
    sample_images(trained_run, 64, tmp_path, seed=0, device="cpu", progress=False)
    tiles = np.stack([pixels(tmp_path / f"seed{s:06d}.png") for s in range(64)]).astype(np.uint8)
    assert np.array_equal(pixels(trained_run / "samples.png"), image_grid(tiles))


def test_sampling_refuses_to_mix_checkpoints(trained_run, tmp_path):
    sample_images(trained_run, 2, tmp_path / "out", device="cpu", progress=False)
    other = save_checkpoint(tmp_path / "other", create_generator("dcgan", **SMALL), step=0)
    with pytest.raises(ValueError, match="another checkpoint"):
        sample_images(other, 2, tmp_path / "out", device="cpu", progress=False)
