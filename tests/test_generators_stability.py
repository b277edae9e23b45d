"""Stability tooling: losses, penalties, spectral norm, TTUR, EMA and mode-collapse diagnostics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from generators.diagnostics import (COLLAPSE_BARS, RUNAWAY_STEPS, CollapseProbe, HealthWatch,
                                   mean_pairwise_distance, projection_features)
from generators.losses import get_loss, gradient_penalty, r1_penalty
from generators.registry import create_generator, get_family
from generators.sampling import generate
from generators.steps import AdversarialStep, ExponentialMovingAverage
from generators_support import TINY, one_thread  # noqa: F401 (fixture)
import test_generators_cyclegan as cyclegan
import test_generators_stylegan as stylegan

CPU = torch.device("cpu")


def test_loss_formulas():
    real, fake = torch.tensor([2.0, -0.5]), torch.tensor([0.5, -3.0])
    hinge = get_loss("hinge")
    assert hinge.discriminator(real, fake).item() == pytest.approx((0 + 1.5) / 2 + (1.5 + 0) / 2)
    assert hinge.generator(fake).item() == pytest.approx(1.25)
    lsgan = get_loss("lsgan")
    assert lsgan.discriminator(real, fake).item() == pytest.approx(
        0.5 * ((1 + 2.25) / 2 + (0.25 + 9) / 2))
    assert lsgan.generator(fake).item() == pytest.approx((0.25 + 16) / 2)
    assert torch.equal(lsgan.score(torch.tensor([1.7, 0.3, -2.0])), torch.tensor([1.0, 0.3, 0.0]))
    wgan = get_loss("wgan-gp")
    assert wgan.gradient_penalty and not hinge.gradient_penalty
    assert wgan.discriminator(real, fake).item() == pytest.approx(-1.25 - 0.75)


def test_penalties_match_a_linear_critic():
    weight = torch.full((1, 3, 4, 4), 0.5)  # |w|^2 = 48 * 0.25 = 12

    def critic(images: torch.Tensor) -> torch.Tensor:
        return (images * weight).flatten(1).sum(1)

    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    assert r1_penalty(critic, real).item() == pytest.approx(12.0)
    expected = (12.0 ** 0.5 - 1) ** 2
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(expected, rel=1e-5)


def test_wgan_gp_needs_a_discriminator_without_batchnorm():
    with pytest.raises(ValueError, match="d_norm=none"):
        create_generator("dcgan", **TINY, loss="wgan-gp")
    torch.manual_seed(0)
    pair = create_generator("dcgan", **TINY, loss="wgan-gp", d_norm="none", r1_gamma=1.0,
                            r1_every=2)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in pair.discriminator.modules())
    step = AdversarialStep(pair, CPU)
    batch = torch.rand(8, 3, 16, 16) * 2 - 1
    rows = [step(batch) for _ in range(3)]
    assert all(row["gp"] > 0 for row in rows)
    assert ["r1" in row for row in rows] == [True, False, True]  # lazy: every r1_every steps


def _step_and_batch(name: str, loss: str):
    """A fresh step of the family ``name`` at a tiny size with ``loss``, and a batch for it."""
    if name == "stylegan":
        return stylegan.make_step(loss=loss), stylegan.real_batch()
    if name == "cyclegan":
        return cyclegan.make_step(loss=loss), cyclegan.domain_batches()
    torch.manual_seed(0)
    pair = create_generator(name, **TINY, loss=loss, d_norm="none")
    return AdversarialStep(pair, CPU), torch.rand(8, 3, 16, 16) * 2 - 1


@pytest.mark.parametrize("name", ["dcgan", "stylegan", "cyclegan"])
def test_every_loss_a_family_supports_changes_its_training(name):
    """The losses a family declares are the ones its step applies: each gives D another loss
    on the same nets and batch, and wgan-gp (where supported) adds its gradient penalty."""
    rows = {}
    for loss in get_family(name).choices["loss"]:
        step, batch = _step_and_batch(name, loss)
        torch.manual_seed(1)
        rows[loss] = step(batch)
    assert len({row["loss_d"] for row in rows.values()}) == len(rows) >= 3, rows
    assert ("wgan-gp" in rows) == (name == "dcgan")
    assert all(("gp" in row) == (loss == "wgan-gp") for loss, row in rows.items())


def test_spectral_norm_bounds_every_discriminator_layer():
    torch.manual_seed(0)
    pair = create_generator("dcgan", **TINY, spectral_norm=True)
    convs = [m for m in pair.discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)
    for _ in range(30):  # power iterations run in training-mode forwards
        pair.discriminator(torch.randn(4, 3, 16, 16))
    pair.discriminator.eval()
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=0.05)


def test_ttur_gives_discriminator_its_own_rate():
    pair = create_generator("dcgan", **TINY, lr=1e-4, lr_d=4e-4)
    step = AdversarialStep(pair, CPU)
    assert step.optimizers["G"].param_groups[0]["lr"] == 1e-4
    assert step.optimizers["D"].param_groups[0]["lr"] == 4e-4


def test_ema_ramps_up_then_averages():
    net = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(net.weight)
    ema = ExponentialMovingAverage(net, 0.99, rampup=True)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net)  # beta = min(0.99, 1 / 10): the average follows quickly at first
    assert ema.model.weight.item() == pytest.approx(0.9)
    for _ in range(1000):
        ema.update(net)
    assert ema.model.weight.item() == pytest.approx(1.0, abs=1e-6)
    assert not ema.model.weight.requires_grad and not ema.model.training
    fixed = ExponentialMovingAverage(nn.Linear(1, 1, bias=False), 0.5, rampup=False)
    nn.init.zeros_(fixed.model.weight)
    fixed.update(net)
    assert fixed.model.weight.item() == pytest.approx(0.5)


class _IgnoresLatents(nn.Module):
    """A fully collapsed generator: one image whatever z is."""

    z_dim = 8

    def __init__(self):
        super().__init__()
        self.image = nn.Parameter(torch.rand(1, 3, 16, 16) * 2 - 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.image.expand(len(z), -1, -1, -1)


def test_collapse_diagnostic_separates_collapse_from_diversity():
    torch.manual_seed(0)
    real = torch.rand(32, 3, 16, 16) * 2 - 1
    probe = CollapseProbe(real)
    collapsed = probe.measure(generate(_IgnoresLatents(), range(32), CPU))
    assert collapsed["diversity_ratio"] < 1e-6
    assert collapsed["nn_distinct"] == 1
    healthy = probe.measure(real.flip(0))  # as varied as the data, itself
    assert healthy["diversity_ratio"] == pytest.approx(1.0, rel=1e-5)
    assert healthy["nn_distinct"] == 32 and healthy["nn_distinct_fraction"] == 1.0
    partial = probe.measure(torch.cat([real[:4]] * 8))  # four modes of 32
    assert partial["nn_distinct"] == 4 and partial["diversity_ratio"] < 1.0


def test_held_out_real_patches_clear_the_collapse_bars_against_the_trainers_reference(tmp_path):
    """The bars are reachable: 64 real patches of the bundled corpus, measured as the trainer
    measures samples (against PROBE_SIZE other patches), count as healthy."""
    from forensics.bundled import write_bundled_corpus
    from forensics.corpus import discover_corpus
    from generators.data import ImageFolderDataset
    from generators.trainer import PROBE_SIZE

    corpus = discover_corpus(write_bundled_corpus(tmp_path / "real", size=32, count=900, seed=0))
    paths = [it.path for it in corpus.select(split="train")]
    assert len(paths) >= PROBE_SIZE + 64
    images = ImageFolderDataset(paths, 32).batch(torch.randperm(
        len(paths), generator=torch.Generator().manual_seed(0))[:PROBE_SIZE + 64])
    figures = CollapseProbe(images[64:]).measure(images[:64])
    assert figures["diversity_ratio"] > 0.85 and figures["nn_distinct_fraction"] > 0.6
    assert all(figures[key] >= bar for key, bar in COLLAPSE_BARS.items())


def test_projection_features_are_fixed_and_keep_distances():
    images = torch.rand(6, 3, 32, 32)
    a, b = projection_features(images), projection_features(images)
    assert a.shape == (6, 128) and torch.equal(a, b)
    pooled = nn.functional.adaptive_avg_pool2d(images, 16).flatten(1)
    ratio = mean_pairwise_distance(a) / mean_pairwise_distance(pooled)
    assert 0.7 < ratio < 1.3  # a random projection keeps distances roughly


# --- the trainer's health watch ---------------------------------------------------------------


def test_a_generator_that_ignores_z_is_flagged_once_with_options_the_family_has():
    torch.manual_seed(0)
    real = torch.rand(64, 3, 16, 16) * 2 - 1
    ignores_z = torch.rand(1, 3, 16, 16).expand(64, -1, -1, -1) * 2 - 1  # one image for every z
    probe = CollapseProbe(real)
    collapsed, varied = probe.measure(ignores_z), probe.measure(real.flip(0))
    assert collapsed["diversity_ratio"] < 0.1 and collapsed["nn_distinct"] == 1
    watch = HealthWatch(get_family("dcgan").default_config)
    assert watch.observe({"step": 10, **varied}) == [] and not watch.collapsed
    (message,) = watch.observe({"step": 20, **collapsed})
    assert message.startswith("mode collapse at step 20: diversity_ratio 0.")
    assert "--set diffaugment=color,translation,cutout" in message and "--set lr=1e-4" in message
    assert watch.observe({"step": 30, **collapsed}) == []  # said once per run
    assert watch.collapsed and watch.summary()["warnings"][0]["step"] == 20
    assert not watch.observe({"step": 40, **varied}) and not watch.collapsed  # recovered
    # CycleGAN has its own remedy first, then the lr every family has.
    other = HealthWatch(get_family("cyclegan").default_config)
    assert other.observe({"step": 5, **collapsed})[0].endswith(
        "try --set input_skip=true or --set lr=1e-4")
    # A remedy already in effect is not offered again.
    skipping = HealthWatch({**get_family("cyclegan").default_config, "input_skip": True})
    assert skipping.observe({"step": 5, **collapsed})[0].endswith("try --set lr=1e-4")


def test_a_discriminator_that_wins_for_a_stretch_is_flagged_and_replay_agrees():
    config = get_family("stylegan").default_config
    rows = [{"step": s, "d_real": 0.95, "d_fake": 0.05 if s > 10 else 0.3}
            for s in range(1, RUNAWAY_STEPS + 20)]
    watch = HealthWatch(config)
    said = [(row["step"], m) for row in rows for m in watch.observe(row)]
    assert [step for step, _ in said] == [10 + RUNAWAY_STEPS]
    assert "the discriminator wins from step 11" in said[0][1] and "--set r1_gamma=1" in said[0][1]
    replay = HealthWatch(config)
    for row in rows:
        replay.observe(row)
    assert replay.summary() == watch.summary()


def test_training_records_its_health_and_zoo_sample_warns_about_a_collapsed_run(
        tmp_path, capsys, caplog, monkeypatch):
    from forensics.cli import main as cli
    from generators import diagnostics
    from generators.checkpoint import read_checkpoint_config
    from generators_support import write_blob_images

    # A bar no generator reaches: this 2-step run is flagged whatever it learned.
    monkeypatch.setitem(diagnostics.COLLAPSE_BARS, "diversity_ratio", 1e9)
    data = write_blob_images(tmp_path / "data", n=16, size=16)[0].parent
    run = tmp_path / "run"
    assert cli(["zoo", "train", "dcgan", "--data", str(data), "--out", str(run), "--steps", "2",
                "--resolution", "16", "--batch-size", "8", "--set", "ngf=4", "--set", "ndf=4",
                "--set", "nz=8", "--device", "cpu", "--diagnostics-every", "1", "-q"]) == 0
    health = read_checkpoint_config(run)["extra"]["health"]
    assert health["collapsed"] and set(health["last_diagnostics"]) == set(diagnostics.COLLAPSE_BARS)
    assert [w["symptom"] for w in health["warnings"]] == ["collapse"]  # logged once, at step 1
    assert [r.getMessage() for r in caplog.records if "mode collapse" in r.getMessage()] == [
        f"training dcgan: {health['warnings'][0]['message']}"]
    capsys.readouterr()
    assert cli(["zoo", "sample", str(run), "--n", "2", "--out", str(tmp_path / "fakes"),
                "--device", "cpu", "-q"]) == 0
    assert f"warning: {run} ended collapsed (diversity_ratio " in capsys.readouterr().out


def test_dcgan_defaults_stay_diverse_on_a_tiny_real_corpus(tmp_path, one_thread):
    """The small-data defaults (batch 16, lr 5e-4, EMA) on ~400 real 16 px patches: after the
    first measurement (every GAN starts with near-identical samples) the diagnostics stay
    above the collapse bars and the run ends healthy (seeded, CPU)."""
    from forensics.bundled import write_bundled_corpus
    from forensics.corpus import discover_corpus
    from generators.checkpoint import read_checkpoint_config
    from generators import read_stats, train_gan

    corpus = discover_corpus(write_bundled_corpus(tmp_path / "real", size=16, count=600, seed=0))
    paths = [it.path for it in corpus.select(split="train")]
    train_gan("dcgan", paths, tmp_path / "run", steps=400, seed=0, device="cpu",
              config_overrides={"resolution": 16}, progress=False, diagnostics_every=100)
    measured = [row for row in read_stats(tmp_path / "run") if "diversity_ratio" in row]
    assert [row["step"] for row in measured] == [100, 200, 300, 400]
    for row in measured[1:]:
        assert all(row[key] >= bar for key, bar in COLLAPSE_BARS.items()), row
    assert read_checkpoint_config(tmp_path / "run")["extra"]["health"]["collapsed"] is False
