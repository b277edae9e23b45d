"""The diffusion model in the generator zoo: schedules, forward noising, DDIM, U-Net, step, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from forensics.cli import main as cli
from generators import checkpoint_sha256, load_checkpoint, read_stats
from generators import trainer as trainer_module
from generators.diffusion import (beta_schedule, ddim_sample, ddim_sigma, ddim_timesteps,
                                  noise_prediction_loss, q_sample)
from generators.nets.ddpm import latent_seeded_noise
from generators.registry import create_generator, get_family
from generators.sampling import generate
from generators.steps_ddpm import PREVIEW_SEEDS, DiffusionStep, GradientClipping
from generators_support import one_thread, write_blob_images  # noqa: F401 (fixture)

TINY = {"resolution": 16, "channels": 8, "channel_mults": (1, 2), "num_res_blocks": 1,
        "attention_resolution": 8, "timesteps": 100, "beta_schedule": "cosine",
        "sampling_steps": 4, "preview_steps": 2, "batch_size": 8}
CPU = torch.device("cpu")


def tiny_pair(**overrides):
    torch.manual_seed(0)
    return create_generator("ddpm", **{**TINY, **overrides})


def abar(name: str, timesteps: int = 1000) -> torch.Tensor:
    return torch.cumprod(1 - beta_schedule(name, timesteps), 0)


# --- noise schedule and forward process -------------------------------------------------------

def test_schedules_lose_signal_monotonically_with_their_endpoints():
    linear, cosine = beta_schedule("linear", 1000), beta_schedule("cosine", 1000)
    assert (float(linear[0]), float(linear[-1])) == pytest.approx((1e-4, 0.02))
    assert float(cosine.max()) <= 0.999 and float(cosine[0]) < 1e-4  # gentler first step
    for name in ("linear", "cosine"):
        signal = abar(name)
        assert bool((signal[1:] < signal[:-1]).all()) and 0 < float(signal[-1]) < 1e-4
    # The cosine schedule's point: it keeps more signal half-way than the linear one.
    assert float(abar("cosine")[500]) > 2 * float(abar("linear")[500])
    with pytest.raises(ValueError, match="beta schedule must be one of"):
        beta_schedule("quadratic", 10)


def test_closed_form_noising_matches_the_step_by_step_chain():
    """x_t from x0 in one jump has the distribution of t single steps
    x_s = sqrt(1 - beta_s) x_{s-1} + sqrt(beta_s) n_s."""
    betas = beta_schedule("linear", 1000)
    signal = torch.cumprod(1 - betas, 0).float()
    torch.manual_seed(0)
    x0 = torch.full((1, 1, 200, 200), 0.7)
    chain = x0.double()
    for beta in betas[:300]:
        chain = (1 - beta).sqrt() * chain + beta.sqrt() * torch.randn_like(chain)
    t = torch.tensor([299])
    jump = q_sample(signal, x0, t, torch.randn_like(x0))
    for sample in (chain.float(), jump):
        assert float(sample.mean()) == pytest.approx(0.7 * float(signal[299].sqrt()), abs=0.01)
        assert float(sample.std()) == pytest.approx(float((1 - signal[299]).sqrt()), abs=0.01)
    noise = torch.randn(2, 3, 4, 4)
    exact = q_sample(signal, x0[..., :4, :4].expand(2, 3, 4, 4), torch.tensor([0, 999]), noise)
    assert torch.allclose(exact[1], signal[999].sqrt() * 0.7 + (1 - signal[999]).sqrt() * noise[1])


def test_the_training_loss_is_zero_for_the_true_noise_and_one_for_none():
    signal = abar("linear").float()
    x0 = torch.rand(16, 3, 8, 8) * 2 - 1

    def oracle(x_t, t):  # the noise that made x_t from this x0
        a = signal[t].view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    torch.manual_seed(1)
    assert float(noise_prediction_loss(oracle, signal, x0)) < 1e-6
    zero = noise_prediction_loss(lambda x_t, t: torch.zeros_like(x_t), signal, x0)
    assert float(zero) == pytest.approx(1.0, abs=0.1)  # E|eps|^2 per value


# --- DDIM -------------------------------------------------------------------------------------

def test_ddim_timesteps_cover_the_range_from_the_top():
    assert ddim_timesteps(10, 10) == list(range(9, -1, -1))
    steps = ddim_timesteps(1000, 50)
    assert len(set(steps)) == 50 and steps[0] == 999 and steps[-1] == 0
    assert steps == sorted(steps, reverse=True)
    with pytest.raises(ValueError, match="1 to 10 sampling steps"):
        ddim_timesteps(10, 11)


def test_ddim_noise_with_eta_1_is_the_ddpm_posterior_variance():
    betas = beta_schedule("linear", 1000)
    signal = torch.cumprod(1 - betas, 0)
    t = torch.arange(1, 1000)
    posterior = betas[t] * (1 - signal[t - 1]) / (1 - signal[t])
    assert torch.allclose(ddim_sigma(signal[t], signal[t - 1], 1.0) ** 2, posterior)
    assert float(ddim_sigma(signal[5], signal[4], 0.0)) == 0.0


@pytest.mark.parametrize("steps, eta", [(1000, 0.0), (10, 0.0), (1000, 1.0)])
def test_ddim_with_the_true_noise_of_one_image_returns_that_image(steps, eta):
    signal = abar("linear").float()
    x0 = torch.rand(2, 3, 8, 8) * 1.8 - 0.9

    def oracle(x_t, t):
        a = signal[t].view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    torch.manual_seed(2)
    out = ddim_sample(oracle, signal, torch.randn(2, 3, 8, 8), steps, eta)
    assert torch.allclose(out, x0, atol=1e-4)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_draws_the_data_distribution_from_the_optimal_denoiser(eta):
    """For data x0 ~ N(mu, s^2) the best noise prediction is known in closed form; DDIM (eta
    0, the deterministic sampler) and DDPM (eta 1) in all T steps must then turn N(0, 1) noise
    into that distribution: a wrong coefficient or noise scale shifts its mean or spread.
    (With fewer steps the spread shrinks: 0.27 instead of 0.3 at 50 DDIM steps.)"""
    mu, s = 0.2, 0.3
    signal = abar("linear").double()

    def optimal(x_t, t):
        a = signal[t].view(-1, 1, 1, 1)
        return (1 - a).sqrt() * (x_t - a.sqrt() * mu) / (a * s ** 2 + 1 - a)

    torch.manual_seed(3)
    out = ddim_sample(optimal, signal, torch.randn(1, 1, 100, 100, dtype=torch.float64),
                      1000, eta)
    assert float(out.mean()) == pytest.approx(mu, abs=0.01)
    assert float(out.std()) == pytest.approx(s, abs=0.01)


# --- the U-Net and the generator view --------------------------------------------------------

def test_unet_predicts_per_image_and_per_timestep():
    pair = tiny_pair(dropout=0.0)
    for parameter in pair.generator.parameters():  # off the zero init: outputs must vary
        if parameter.dim() > 1 and not parameter.any():
            torch.nn.init.normal_(parameter, 0, 0.1)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        batch = pair.generator(x, torch.tensor([0, 50, 99]))
        alone = pair.generator(x[1:2], torch.tensor([50]))
        later = pair.generator(x[1:2], torch.tensor([90]))
    assert batch.shape == x.shape
    assert torch.allclose(batch[1:2], alone, atol=1e-5)  # GroupNorm: no batch statistics
    assert (alone - later).abs().mean() > 0.01 * alone.abs().mean()  # the timestep counts
    assert get_family("ddpm").resolve_step_class() is DiffusionStep
    assert pair.net_names == ("generator",) and pair.generator.z_dim == 3 * 16 * 16


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_an_image_depends_on_its_seed_alone(eta):
    model = tiny_pair(eta=eta).generator
    for parameter in model.unet.out.parameters():
        torch.nn.init.normal_(parameter, 0, 0.1)
    together = generate(model, [3, 5], CPU)
    alone = generate(model, [5], CPU)
    assert torch.allclose(together[1], alone[0], atol=1e-5)
    assert not torch.allclose(together[0], together[1], atol=1e-2)
    assert together.abs().max() <= 1


def test_extra_noise_follows_each_latent():
    latents = torch.randn(3, 12)
    first = latent_seeded_noise(latents, torch.Size([12]))
    again = latent_seeded_noise(latents[[2, 0]], torch.Size([12]))
    a, b = first(), again()
    assert torch.equal(a[[2, 0]], b) and not torch.equal(a[0], a[1])
    assert not torch.equal(first()[0], a[0])  # each call draws fresh noise


# --- the training step ---------------------------------------------------------------------

def test_gradient_clipping_caps_the_update_before_each_step():
    layer = torch.nn.Linear(4, 4)
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    clipping = GradientClipping(optimizer, layer.parameters(), max_norm=0.5)
    before = [p.detach().clone() for p in layer.parameters()]
    optimizer.zero_grad()
    (100 * layer(torch.ones(2, 4)).sum()).backward()
    optimizer.step()
    moved = torch.cat([(p.detach() - q).flatten() for p, q in zip(layer.parameters(), before)])
    assert float(clipping.norm) > 10 and float(moved.norm()) == pytest.approx(0.5, rel=1e-4)


def test_the_loss_falls_on_simple_images(tmp_path):
    images = torch.stack([torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)
                          for path in write_blob_images(tmp_path, n=16, size=16)])
    images = images.float() / 127.5 - 1
    step = DiffusionStep(tiny_pair(lr=2e-3, ema_beta=0.0), CPU)
    torch.manual_seed(0)
    losses = [step(images[torch.randperm(16)[:8]])["loss"] for _ in range(40)]
    assert np.mean(losses[-10:]) < 0.65 * np.mean(losses[:5]), losses  # about 0.97 -> 0.48
    assert step.preview().shape == (len(PREVIEW_SEEDS), 3, 16, 16)
    assert list(PREVIEW_SEEDS) == list(trainer_module.GRID_SEEDS)


# --- trainer, sampling and the command line ------------------------------------------------

@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return write_blob_images(tmp_path_factory.mktemp("blobs"), n=16, size=16)[0].parent


def settings(config: dict) -> list[str]:
    return [arg for key, value in config.items()
            for arg in ("--set", f"{key}={json.dumps(value)}")]


def test_cli_trains_resumes_exactly_and_samples_a_fake_corpus(blobs, tmp_path, capsys):
    train = ["zoo", "train", "ddpm", "--data", str(blobs), "--device", "cpu", "--seed", "4",
             "-q", "--diagnostics-every", "3", *settings({**TINY, "ema_beta": 0.9})]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert cli([*train, "--out", str(whole), "--steps", "6"]) == 0
    assert cli([*train, "--out", str(split), "--steps", "3"]) == 0
    assert cli([*train, "--out", str(split), "--steps", "6", "--resume"]) == 0
    documents = [json.loads((run / "config.json").read_text()) for run in (whole, split)]
    assert documents[0]["files"] == documents[1]["files"]  # weights, EMA, Adam, RNG, data
    rows = read_stats(split)
    assert [row["step"] for row in rows] == list(range(1, 7))
    assert [row["loss"] for row in rows] == [row["loss"] for row in read_stats(whole)]
    assert "loss_d" not in rows[0] and "diversity_ratio" in rows[2]
    assert (split / "samples.png").exists() and (split / "curves.png").exists()
    pair, _ = load_checkpoint(split)
    assert pair.generator_ema is not None

    fakes, again = tmp_path / "fakes", tmp_path / "again"
    sample = ["zoo", "sample", str(split), "--device", "cpu", "-q"]
    assert cli([*sample, "--n", "3", "--seed", "2", "--out", str(fakes)]) == 0
    assert cli([*sample, "--n", "1", "--seed", "3", "--out", str(again)]) == 0
    manifest = [json.loads(line) for line in (fakes / "manifest.jsonl").read_text().splitlines()]
    assert [row["path"] for row in manifest] == [f"seed{s:06d}.png" for s in (2, 3, 4)]
    assert {(row["generator"], row["label"], row["sampler"], row["sampling_steps"], row["eta"],
             row["checkpoint_sha256"], row["resolution"]) for row in manifest} == {
        ("ddpm", "fake", "ddim", 4, 0.0, checkpoint_sha256(split), 16)}
    assert (fakes / "seed000003.png").read_bytes() == (again / "seed000003.png").read_bytes()
    assert (fakes / "seed000002.png").read_bytes() != (fakes / "seed000003.png").read_bytes()
    capsys.readouterr()

    assert cli(["zoo", "list"]) == 0
    listed = capsys.readouterr().out
    assert "ddpm (data: images)" in listed and "supports beta_schedule in ['linear', 'cosine']" \
        in listed


@pytest.mark.parametrize("args, message", [
    (["--set", "loss=\"hinge\""], "does not support config key(s) ['loss']"),
    (["--set", "beta_schedule=\"quadratic\""], "supports beta_schedule in"),
    (["--set", "eta=2"], "'eta' must be a number in [0, 1]"),
    (["--set", "sampling_steps=200"], "'sampling_steps' must be at most timesteps (100)"),
    (["--set", "attention_resolution=4"], "'attention_resolution' must be one of"),
])
def test_unsupported_training_options_are_refused(blobs, tmp_path, capsys, args, message):
    assert cli(["zoo", "train", "ddpm", "--data", str(blobs), "--out", str(tmp_path / "run"),
                "--steps", "1", "-q", *settings(TINY), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "config.json").exists()


def test_unsupported_sampling_options_are_refused(blobs, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(["zoo", "train", "ddpm", "--data", str(blobs), "--out", str(run), "--steps", "1",
                "--device", "cpu", "--diagnostics-every", "0", "-q", *settings(TINY)]) == 0
    for option, message in ((["--truncation", "0.7"], "has no truncation"),
                            (["--class", "cat"], "is not conditional")):
        assert cli(["zoo", "sample", str(run), "--n", "1", "--out", str(tmp_path / "fakes"),
                    "-q", *option]) == 2
        assert message in capsys.readouterr().err
