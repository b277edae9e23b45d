"""CycleGAN in the generator zoo: networks, image pool, lr schedule, the step, trainer and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crashsafe.tensors import decode_state, encode_state
from forensics.cli import main as forensics_main
from forensics.corpus import discover_corpus, split_for
from generators import checkpoint_sha256, train_gan
from generators.nets.cyclegan import PatchDiscriminator, ResnetBlock
from generators.registry import create_generator, get_family
from generators.steps_cyclegan import (PREVIEW_SIZE, CycleGANStep, ImagePool,
                                       linear_decay_factor)
from generators_support import one_thread  # noqa: F401 (fixture)

TINY = {"resolution": 32, "ngf": 8, "ndf": 8, "n_blocks": 2, "pool_size": 4}


def tiny_pair(**overrides):
    torch.manual_seed(0)
    return create_generator("cyclegan", **{**TINY, **overrides})


def make_step(**overrides) -> CycleGANStep:
    step_class = get_family("cyclegan").resolve_step_class()
    assert step_class is CycleGANStep
    return step_class(tiny_pair(**overrides), torch.device("cpu"), amp=False)


def domain_batches(n: int = 2, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Domain A: dark red squares on grey; domain B: bright blue stripes on grey."""
    a = torch.zeros(n, 3, size, size)
    b = torch.zeros(n, 3, size, size)
    for i in range(n):
        a[i, 0, 4 + i:20 + i, 4:20] = 0.8
        b[i, 2, :, (i % 4)::4] = 0.9
    return a, b


# --- networks --------------------------------------------------------------------------------

@pytest.mark.parametrize("resolution, patches", [(32, 2), (64, 6)])
def test_networks_keep_the_image_size_and_score_patches(resolution, patches):
    pair = tiny_pair(resolution=resolution)
    assert pair.net_names == ("G_AB", "G_BA", "D_A", "D_B")
    images = torch.rand(2, 3, resolution, resolution) * 2 - 1
    for name in ("G_AB", "G_BA"):
        out = getattr(pair, name)(images)
        assert out.shape == images.shape and out.abs().max() <= 1
    for name in ("D_A", "D_B"):
        assert getattr(pair, name)(images).shape == (2, 1, patches, patches)


def test_residual_blocks_follow_the_resolution_unless_set():
    def blocks(pair):
        return sum(isinstance(m, ResnetBlock) for m in pair.G_AB.modules())

    assert blocks(create_generator("cyclegan", ngf=4, ndf=4)) == 6
    assert blocks(create_generator("cyclegan", ngf=4, ndf=4, resolution=256)) == 9
    assert blocks(tiny_pair()) == 2


def test_patch_discriminator_has_a_70_pixel_receptive_field():
    discriminator = PatchDiscriminator(4, n_layers=3)
    for index, layer in enumerate(discriminator.net):
        if isinstance(layer, torch.nn.InstanceNorm2d):  # it couples all pixels: take it out
            discriminator.net[index] = torch.nn.Identity()
    probe = torch.zeros(1, 3, 128, 128, requires_grad=True)
    discriminator(probe)[0, 0, 7, 7].backward()
    rows = probe.grad.abs().sum((0, 1, 3)).nonzero()
    assert int(rows.max() - rows.min()) + 1 == 70


def test_invalid_config_values_are_rejected():
    with pytest.raises(ValueError, match="decay_start"):
        create_generator("cyclegan", decay_start=2.0)
    with pytest.raises(ValueError, match="n_blocks"):
        create_generator("cyclegan", n_blocks=0)
    with pytest.raises(ValueError, match="input_skip.*true or false"):
        create_generator("cyclegan", input_skip="yes")


def test_the_input_skip_restores_what_instance_norm_hides():
    """The reference generator gives the same output for an input and a brighter, higher-contrast
    copy of it (its first InstanceNorm removes both); with ``input_skip`` it starts as
    tanh(input + the reference branch) and tells them apart."""
    images = torch.rand(2, 3, 32, 32) * 0.5 - 0.5
    brighter = images * 1.5 + 0.3
    reference, skipped = tiny_pair().G_AB.eval(), tiny_pair(input_skip=True).G_AB.eval()
    with torch.no_grad():
        assert torch.allclose(reference(images), reference(brighter), atol=1e-3)
        assert (skipped(images) - skipped(brighter)).abs().mean() > 0.1
        assert torch.allclose(skipped(images), torch.tanh(skipped.net(images) + images))


# --- image pool and schedule -----------------------------------------------------------------

def test_image_pool_fills_then_returns_a_stored_fake_half_the_time():
    pool = ImagePool(3, torch.Generator().manual_seed(0))
    first = torch.arange(3.0).view(3, 1)
    assert torch.equal(pool.query(first), first)  # filling: the images themselves
    seen = set(range(3))
    from_pool = 0
    for value in range(3, 403):
        out = float(pool.query(torch.tensor([[float(value)]]))[0, 0])
        if out != value:  # an older fake came back; the new one took its place
            assert out in seen
            seen.discard(out)
            from_pool += 1
        seen.add(value) if out != value else None
        assert len(pool.images) == 3
        assert {float(x) for x in pool.images} == seen
    assert 160 < from_pool < 240  # about half of 400


def test_image_pool_state_reproduces_its_future_answers():
    pool = ImagePool(2, torch.Generator().manual_seed(1))
    for value in range(5):
        pool.query(torch.full((1, 1), float(value)))
    copy = ImagePool(2, torch.Generator())
    copy.load_state_dict(decode_state(*encode_state(pool.state_dict())))
    batch = torch.arange(10.0, 20.0).view(10, 1)
    assert torch.equal(pool.query(batch), copy.query(batch))
    assert ImagePool(0, torch.Generator()).query(batch) is batch


def test_lr_is_constant_then_decays_linearly_to_zero():
    factors = [linear_decay_factor(s, 100, 0.5) for s in (0, 49, 50, 75, 99, 100, 150)]
    assert factors == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.02, 0.0, 0.0])
    step = make_step(total_steps=4, decay_start=0.5, lr=1e-3)
    a, b = domain_batches(1)
    lrs = [step((a, b))["lr"] for _ in range(4)]
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 0.5e-3])
    assert step.optimizers["D"].param_groups[0]["lr"] == pytest.approx(0.5e-3)


# --- training step ---------------------------------------------------------------------------

def test_a_few_steps_lower_the_cycle_loss_and_report_every_statistic():
    step = make_step(lr=1e-3)
    batch = domain_batches()
    torch.manual_seed(0)
    rows = [step(batch) for _ in range(10)]
    assert set(rows[0]) >= {"loss_d", "loss_g", "loss_g_gan", "cycle", "identity", "d_real",
                            "d_fake", "lr", "skipped"}
    assert rows[-1]["cycle"] < 0.7 * rows[0]["cycle"], [r["cycle"] for r in rows]
    assert all(0 <= r["d_real"] <= 1 and 0 <= r["d_fake"] <= 1 for r in rows)
    preview = step.preview()  # the first A images seen, translated, up to PREVIEW_SIZE
    assert preview.shape == (min(PREVIEW_SIZE, 10 * len(batch[0])), 3, 32, 32)


def test_translate_maps_each_direction_to_its_generator():
    pair = tiny_pair().eval()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(CycleGANStep.translate(pair, images, "AtoB"), pair.G_AB(images))
        assert torch.equal(CycleGANStep.translate(pair, images, "BtoA"), pair.G_BA(images))
    with pytest.raises(ValueError, match="direction"):
        CycleGANStep.translate(pair, images, "sideways")


def test_step_state_round_trip_continues_identically():
    batch = domain_batches()
    first = make_step(pool_size=2)
    torch.manual_seed(0)
    for _ in range(2):
        first(batch)
    second = make_step(pool_size=2)
    second.pair.load_state_dict(first.pair.state_dict())
    second.load_state_dict(decode_state(*encode_state(first.state_dict())))
    rows = []
    for step in (first, second):  # the pools are full: the next step draws from them
        torch.manual_seed(3)
        rows.append(step(batch))
    assert rows[0] == rows[1]
    for (name, x), y in zip(first.pair.state_dict().items(), second.pair.state_dict().values()):
        assert torch.equal(x, y), name


# --- trainer, translation sampling and the command line --------------------------------------

def write_domain(folder, batch: torch.Tensor) -> list:
    folder.mkdir(parents=True)
    paths = []
    for i, image in enumerate(batch):
        path = folder / f"img{i:02d}.png"
        pixels = ((image.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    root = tmp_path_factory.mktemp("domains")
    a, b = domain_batches(6)
    return write_domain(root / "A", a), write_domain(root / "B", b)


def test_trainer_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, domains):
    paths_a, paths_b = domains
    options = {"data_b": paths_b, "seed": 1, "device": "cpu", "progress": False,
               "diagnostics_every": 0, "config_overrides": {**TINY, "batch_size": 2}}
    train_gan("cyclegan", paths_a, tmp_path / "split", steps=2, **options)
    train_gan("cyclegan", paths_a, tmp_path / "split", steps=4, resume=True, **options)
    train_gan("cyclegan", paths_a, tmp_path / "whole", steps=4, **options)
    assert checkpoint_sha256(tmp_path / "split") == checkpoint_sha256(tmp_path / "whole")


def test_cli_trains_on_two_domains_and_translates_a_folder(tmp_path, domains):
    paths_a, paths_b = domains
    run, fakes = tmp_path / "run", tmp_path / "fakes"
    settings = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
    train = ["zoo", "train", "cyclegan", "--data", str(paths_a[0].parent), "--data-b",
             str(paths_b[0].parent), "--out", str(run), "-q", *settings]
    assert forensics_main([*train, "--steps", "2"]) == 0
    assert forensics_main([*train, "--steps", "3", "--resume"]) == 0
    assert (run / "samples.png").exists()
    source = paths_b[0].parent
    assert forensics_main(["zoo", "sample", str(run), "--n", "4", "--out", str(fakes),
                           "--source", str(source), "--direction", "BtoA", "-q"]) == 0
    rows = [json.loads(line) for line in (fakes / "manifest.jsonl").read_text().splitlines()]
    assert [row["source"] for row in rows] == [str(p) for p in paths_b[:4]]
    assert {row["direction"] for row in rows} == {"BtoA"}
    assert {row["generator"] for row in rows} == {"cyclegan"}
    assert np.asarray(Image.open(fakes / rows[0]["path"])).shape == (32, 32, 3)


def test_translations_inherit_the_split_of_their_source(tmp_path, domains):
    """A fake keeps its source's split: from the source corpus's manifest, else the hash of
    the source's path; corpus discovery of the fakes keeps it. A translation of a test photo
    in the train split would leak the test photo into training."""
    paths_a, paths_b = domains
    run = tmp_path / "run"
    train_gan("cyclegan", paths_a, run, data_b=paths_b, steps=1, device="cpu", progress=False,
              diagnostics_every=0, config_overrides={**TINY, "batch_size": 2})
    corpus = tmp_path / "bundled"
    assert forensics_main(["corpus", "bundled", str(corpus), "--size", "32", "--count", "24",
                           "-q"]) == 0
    plain = paths_b[0].parent  # no manifest: splits by the hash of the path under the folder
    for source in (corpus, plain):
        fakes = tmp_path / f"fakes_{source.name}"
        assert forensics_main(["zoo", "sample", str(run), "--n", "24", "--out", str(fakes),
                               "--source", str(source), "-q"]) == 0
        expected = ({it.path: it.split for it in discover_corpus(corpus).items}
                    if source == corpus else
                    {p: split_for(p.relative_to(plain).as_posix()) for p in paths_b})
        rows = [json.loads(line) for line in (fakes / "manifest.jsonl").read_text().splitlines()]
        assert len(rows) == len(expected)
        assert {row["path"]: row["split"] for row in rows} == {
            f"{Path(row['source']).stem}_AtoB.png": expected[Path(row["source"])] for row in rows}
        found = discover_corpus(fakes).items
        assert {it.path.name: it.split for it in found} == {
            row["path"]: expected[Path(row["source"])] for row in rows}
        # Without the source's split the fakes would split by their own paths: differently.
        assert any(split_for(row["path"]) != row["split"] for row in rows)
        assert len(set(expected.values())) > 1
