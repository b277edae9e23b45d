"""Pix2Pix in the generator zoo: U-Net and conditional PatchGAN, aligned pairs (A|B files,
Canny edges and grey made from photos), the step, and train / resume / sample via the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file

from forensics.cli import main as cli
from generators import load_checkpoint
from generators.data_aligned import AlignedDataset, PairTask, canny_edges, grey
from generators.registry import create_generator, get_family
from generators.steps_pix2pix import PREVIEW_SIZE, Pix2PixStep
from generators_support import one_thread, write_blob_images  # noqa: F401 (fixture)

TINY = {"resolution": 32, "ngf": 8, "ndf": 8, "batch_size": 4}
TASK = {"task": "edges2photo", "direction": "AtoB", "canny_low": 100.0, "canny_high": 200.0,
        "resolution": 32}


def tiny_pair(**overrides):
    torch.manual_seed(0)
    return create_generator("pix2pix", **{**TINY, **overrides})


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Eight 32 px photos with discs and stripes: edges to find, colours to learn."""
    return write_blob_images(tmp_path_factory.mktemp("photos"), n=8, size=32)


# --- networks --------------------------------------------------------------------------------

@pytest.mark.parametrize("resolution, levels, patches", [(32, 5, 2), (64, 6, 6)])
def test_unet_keeps_the_size_and_the_patchgan_scores_input_output_pairs(resolution, levels,
                                                                         patches):
    pair = tiny_pair(resolution=resolution)
    assert pair.generator.levels == levels  # down to a 1x1 bottleneck
    images = torch.rand(2, 3, resolution, resolution) * 2 - 1
    out = pair.generator(images)
    assert out.shape == images.shape and out.abs().max() <= 1
    scores = pair.discriminator(torch.cat([images, out], dim=1))
    assert scores.shape == (2, 1, patches, patches)
    dropouts = sum(isinstance(m, torch.nn.Dropout) for m in pair.generator.modules())
    assert dropouts == min(3, levels - 2)
    assert tiny_pair(num_downs=3).generator(images).shape == images.shape  # 4x4 bottleneck


def test_skip_connections_carry_the_input_past_a_dead_bottleneck():
    generator = tiny_pair(dropout_blocks=0).generator.eval()
    bottom = generator.down[-1][1]
    torch.nn.init.zeros_(bottom.weight)
    torch.nn.init.zeros_(bottom.bias)
    bottlenecks = []
    generator.down[-1].register_forward_hook(lambda _, __, out: bottlenecks.append(out))
    a, b = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        difference = (generator(a) - generator(b)).abs().mean()
    assert all((out == 0).all() for out in bottlenecks)  # nothing gets through the bottom ...
    assert difference > 1e-3  # ... but the skips do


def test_dropout_randomises_training_outputs_only():
    generator = tiny_pair().generator
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert not torch.equal(generator(images), generator(images))
        generator.eval()
        assert torch.equal(generator(images), generator(images))


def test_invalid_configs_are_refused_with_the_key_named():
    for overrides, key in (({"resolution": 16}, "resolution"), ({"num_downs": 9}, "num_downs"),
                           ({"dropout_blocks": -1}, "dropout_blocks"),
                           ({"canny_low": 300.0}, "canny_high")):
        with pytest.raises(ValueError, match=key):
            tiny_pair(**overrides)
    with pytest.raises(ValueError, match=r"does not support loss='wgan-gp'.*nonsaturating"):
        tiny_pair(loss="wgan-gp")


# --- aligned data ----------------------------------------------------------------------------

def test_canny_edges_outline_a_square_black_on_white_and_grey_is_bt601():
    photo = np.zeros((32, 32, 3), np.uint8)
    photo[8:24, 8:24] = (255, 0, 0)
    edges = canny_edges(photo, 100, 200)
    assert edges.shape == (32, 32, 3) and (edges[..., 0] == edges[..., 2]).all()
    lines = edges[..., 0] == 0
    assert lines[8:24, 7:9].any() and lines[8:24, 23:25].any()  # the left and right sides
    assert not lines[12:20, 12:20].any() and not lines[:4].any()  # nothing inside or far off
    assert set(np.unique(edges)) == {0, 255}
    assert set(np.unique(grey(photo))) == {0, 76}  # 0.299 * 255


def test_side_by_side_files_split_into_input_and_target_halves(tmp_path):
    paths = []
    for i, (left, right) in enumerate((((200, 0, 0), (0, 0, 200)), ((0, 200, 0), (90, 90, 90)))):
        pixels = np.zeros((40, 80, 3), np.uint8)
        pixels[:, :40], pixels[:, 40:] = left, right
        pixels[:5, :5] = pixels[:5, 40:45] = 255  # a mark in each half's top-left corner
        paths.append(tmp_path / f"pair{i}.jpg" if i else tmp_path / f"pair{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    task = PairTask(**{**TASK, "task": "pairs"})
    dataset = AlignedDataset(paths, task, flip=False)
    inputs, targets = dataset.batch(torch.tensor([0]))
    assert inputs.shape == targets.shape == (1, 3, 32, 32)
    assert inputs[0, :, 16, 16].tolist() == pytest.approx([200 / 127.5 - 1, -1, -1], abs=0.01)
    assert targets[0, :, 16, 16].tolist() == pytest.approx([-1, -1, 200 / 127.5 - 1], abs=0.01)
    reverse = AlignedDataset(paths, PairTask(**{**TASK, "task": "pairs", "direction": "BtoA"}))
    assert torch.equal(reverse.batch(torch.tensor([1]))[0], dataset.batch(torch.tensor([1]))[1])
    # Sampling translates the input half of an A|B file, or a lone input image as it is.
    assert np.array_equal(task.source_input(paths[0]), dataset.inputs[0].permute(1, 2, 0))
    lone = tmp_path / "lone.png"
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(lone)
    assert (task.source_input(lone) == 7).all()
    # A flip mirrors input and target together (the marks move to the right together).
    flipping = AlignedDataset(paths[:1], task, flip=True)
    torch.manual_seed(0)
    flips = [flipping.training_batch(torch.tensor([0])) for _ in range(8)]
    mirrored = [(bool(x[0, 1, 0, -1] > 0.9), bool(y[0, 1, 0, -1] > 0.9)) for x, y in flips]
    assert {a for a, _ in mirrored} == {True, False} and all(a == b for a, b in mirrored)


def test_builtin_tasks_make_inputs_from_photos_as_sampling_does(photos):
    for name, make in (("edges2photo", lambda p: canny_edges(p, 100, 200)),
                       ("grey2colour", grey)):
        task = PairTask(**{**TASK, "task": name})
        dataset = AlignedDataset(photos, task, flip=False)
        photo = dataset.targets[3].permute(1, 2, 0).numpy()
        assert np.array_equal(dataset.inputs[3].permute(1, 2, 0).numpy(), make(photo))
        assert np.array_equal(task.source_input(photos[3]), make(photo))
    edges = AlignedDataset(photos, PairTask(**TASK)).inputs
    assert (edges == 0).any() and (edges == 255).float().mean() > 0.5  # lines on white


# --- the step ----------------------------------------------------------------------------------

def test_l1_falls_when_learning_to_colour_grey_images(photos):
    """Two colours, two grey levels: a mapping the U-Net learns in a few dozen steps."""
    dataset = AlignedDataset(photos, PairTask(**{**TASK, "task": "grey2colour"}), flip=False)
    batch = dataset.batch(torch.arange(4))
    step = Pix2PixStep(tiny_pair(task="grey2colour", lr=1e-3), torch.device("cpu"))
    torch.manual_seed(0)
    rows = [step(batch) for _ in range(30)]
    assert set(rows[0]) == {"loss_d", "loss_g", "loss_g_gan", "l1", "d_real", "d_fake",
                            "skipped"}
    l1 = [row["l1"] for row in rows]
    assert np.mean(l1[-3:]) < 0.5 * np.mean(l1[:3]), l1  # from about 0.57 to 0.22
    assert all(row["loss_g"] == pytest.approx(row["loss_g_gan"] + 100 * row["l1"], rel=1e-5)
               for row in rows)
    assert all(0 <= row["d_real"] <= 1 and 0 <= row["d_fake"] <= 1 for row in rows)
    preview = step.preview()  # the first inputs seen, translated, up to PREVIEW_SIZE
    assert preview.shape == (min(PREVIEW_SIZE, 30 * len(batch[0])), 3, 32, 32)


def test_translate_refuses_the_direction_it_was_not_trained_in():
    pair = tiny_pair().eval()
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(Pix2PixStep.translate(pair, images, "AtoB"), pair.generator(images))
    with pytest.raises(ValueError, match="translates AtoB only.*--direction AtoB"):
        Pix2PixStep.translate(pair, images, "BtoA")
    reverse = tiny_pair(task="pairs", direction="BtoA")
    with pytest.raises(ValueError, match="--direction BtoA"):
        Pix2PixStep.translate(reverse, images, "AtoB")


# --- the command line: train, resume, sample -----------------------------------------------------

def settings(**extra) -> list[str]:
    return [arg for key, value in {**TINY, **extra}.items()
            for arg in ("--set", f"{key}={json.dumps(value)}")]


def test_cli_trains_resumes_exactly_and_samples_a_corpus_from_sources(photos, tmp_path):
    folder = str(photos[0].parent)
    train = ["zoo", "train", "pix2pix", "--data", folder, "--device", "cpu", "-q",
             "--seed", "3", *settings(task="edges2photo")]
    assert cli([*train, "--out", str(tmp_path / "whole"), "--steps", "6"]) == 0
    assert cli([*train, "--out", str(tmp_path / "split"), "--steps", "3"]) == 0
    assert cli([*train, "--out", str(tmp_path / "split"), "--steps", "6", "--resume"]) == 0
    whole = load_file(tmp_path / "whole" / "weights.safetensors")
    split = load_file(tmp_path / "split" / "weights.safetensors")
    assert sorted(whole) == sorted(split) and any(k.startswith("D.") for k in whole)
    for key in whole:  # dropout, flips and batches came back with the RNG and data position
        np.testing.assert_array_equal(split[key], whole[key], err_msg=key)
    documents = [json.loads((tmp_path / run / "config.json").read_text())
                 for run in ("whole", "split")]
    assert documents[0]["files"] == documents[1]["files"]  # optimizer state too
    for name in ("samples.png", "curves.png"):
        assert (tmp_path / "split" / name).exists()
    rows = [json.loads(line) for line in
            (tmp_path / "split" / "stats.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(1, 7)) and "l1" in rows[0]
    assert "diversity_ratio" in rows[-1]  # diagnostics compare outputs with the targets

    fakes = tmp_path / "fakes"
    sample = ["zoo", "sample", str(tmp_path / "split"), "--out", str(fakes), "--source", folder,
              "--device", "cpu", "-q"]
    assert cli([*sample, "--direction", "BtoA"]) == 2  # not the trained direction
    assert not fakes.exists()  # the refusal leaves no folder behind
    assert cli(sample) == 0
    rows = [json.loads(line) for line in (fakes / "manifest.jsonl").read_text().splitlines()]
    assert sorted(row["source"] for row in rows) == sorted(str(p) for p in photos)
    assert {row["generator"] for row in rows} == {"pix2pix-edges2photo"}
    assert {row["direction"] for row in rows} == {"AtoB"}
    assert all(row["label"] == "fake" and row["split"] in ("train", "val", "test")
               for row in rows)
    assert sorted(p.name for p in fakes.glob("*.png")) == sorted(row["path"] for row in rows)
    # Each fake is G applied to its source's edges, at the training resolution.
    pair, _ = load_checkpoint(tmp_path / "split")
    source = photos[0]
    edges = torch.from_numpy(PairTask(**TASK).source_input(source)).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = pair.eval().generator(edges.float() / 127.5 - 1)
    got = np.asarray(Image.open(fakes / f"{source.stem}_AtoB.png"))
    want = ((expected[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    assert got.shape == (32, 32, 3) and np.abs(got.astype(int) - want).max() <= 1


def test_cli_refuses_options_pix2pix_does_not_support(photos, tmp_path, capsys):
    folder = str(photos[0].parent)
    base = ["zoo", "train", "pix2pix", "--data", folder, "--out", str(tmp_path / "run"),
            "--steps", "1", "--device", "cpu", "-q", *settings()]
    for extra, message in ((["--set", "loss=\"wgan-gp\""], "does not support loss='wgan-gp'"),
                           (["--set", "task=\"sketch\""], "does not support task='sketch'"),
                           (["--data-b", folder], "only paired families")):
        assert cli([*base, *extra]) != 0
        assert message in capsys.readouterr().err
    assert cli(["zoo", "list"]) == 0
    listing = capsys.readouterr().out
    line = next(row for row in listing.splitlines() if row.startswith("pix2pix "))
    assert "data: aligned" in line and '"l1_weight": 100.0' in line
    assert "task in ['pairs', 'edges2photo', 'grey2colour']" in listing
    assert get_family("pix2pix").dataset == "aligned"
