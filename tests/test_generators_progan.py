"""Progressive GAN in the generator zoo: growth schedule, fade-in, pixel norm, minibatch std,
equalised learning rate, the step, and training / resuming / sampling through the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from forensics.cli import main as forensics_main
from forensics.corpus import discover_corpus
from generators import checkpoint_sha256, read_stats
from generators.layers import EqualConv2d, EqualLinear
from generators.nets.progan import pixel_norm
from generators.registry import create_generator, get_family
from generators.steps_progan import GrowthSchedule, GrowthStage, ProGANStep, fade_reals
from generators_support import BACKGROUND, one_thread, write_blob_images  # noqa: F401

TINY = {"resolution": 16, "latent_dim": 16, "channel_base": 128, "channel_max": 16,
        "batch_size": 4}
# 4x4 for 2 steps, 8x8 fades in over 1 step, 2 stable steps, then 16x16 fades in at step 6.
GROWING = {**TINY, "stage_steps": 2, "fade_steps": 1}


def tiny_pair(**overrides):
    torch.manual_seed(0)
    return create_generator("progan", **{**TINY, **overrides})


def make_step(**overrides) -> ProGANStep:
    step_class = get_family("progan").resolve_step_class()
    assert step_class is ProGANStep
    return step_class(tiny_pair(**overrides), torch.device("cpu"), amp=False)


def stage_of(net) -> tuple[int, float]:
    return int(net.level), float(net.alpha)


# --- schedule ---------------------------------------------------------------------------------

def test_schedule_fades_each_new_resolution_in_then_stays_at_the_last():
    schedule = GrowthSchedule.from_config({"resolution": 32, "initial_resolution": 4,
                                           "stage_steps": 2, "fade_steps": 2})
    stages = [(schedule.stage(t).resolution, schedule.stage(t).alpha) for t in range(14)]
    third, two_thirds = pytest.approx(1 / 3), pytest.approx(2 / 3)
    assert stages == [(4, 1), (4, 1), (8, third), (8, two_thirds), (8, 1), (8, 1),
                      (16, third), (16, two_thirds), (16, 1), (16, 1),
                      (32, third), (32, two_thirds), (32, 1), (32, 1)]
    assert schedule.grown_at == 12 and schedule.stage(10 ** 6) == GrowthStage(3, 1.0)
    abrupt = GrowthSchedule.from_config({"resolution": 16, "initial_resolution": 8,
                                         "stage_steps": 3, "fade_steps": 0})
    assert [schedule.resolution for schedule in map(abrupt.stage, range(5))] == [8, 8, 8, 16, 16]
    assert abrupt.stage(3).alpha == 1.0 and abrupt.grown_at == 3


def test_a_generator_is_unfinished_until_fully_grown():
    config = create_generator("progan", **GROWING).config
    assert "8x8 px of 16x16" in ProGANStep.unfinished(config, 5)
    message = ProGANStep.unfinished(config, 6)  # update 5 faded 16x16 in at alpha 0.5
    assert "16x16 px of 16x16, fading in at alpha 0.50" in message
    assert "--steps 7" in message
    assert ProGANStep.unfinished(config, 7) is None


# --- layers and networks ----------------------------------------------------------------------

def test_pixel_norm_gives_each_pixel_a_unit_mean_square_over_channels():
    x = torch.randn(2, 5, 3, 3) * torch.linspace(0.1, 10, 9).view(1, 1, 3, 3)
    y = pixel_norm(x)
    torch.testing.assert_close(y.square().mean(1), torch.ones(2, 3, 3))
    torch.testing.assert_close(y * x.square().mean(1, keepdim=True).sqrt(), x)


def test_equalised_learning_rate_stores_unit_weights_and_scales_them_at_run_time():
    pair = tiny_pair(channel_base=1024, channel_max=64)
    layers = [m for m in pair.modules() if isinstance(m, (EqualConv2d, EqualLinear))]
    assert len(layers) > 10
    for layer in layers:
        weight = layer.weight
        assert layer.weight_gain == pytest.approx(1 / math.sqrt(weight[0].numel()))
        if weight.numel() >= 1000:  # stored N(0, 1) whatever the fan-in, not He-scaled
            assert 0.9 < float(weight.detach().std()) < 1.1
    conv = pair.generator.blocks[1][0]
    x = torch.randn(1, conv.weight.shape[1], 8, 8)
    expected = F.leaky_relu(F.conv2d(x, conv.weight / math.sqrt(conv.weight[0].numel()),
                                     conv.bias, padding=1), 0.2) * math.sqrt(2)
    torch.testing.assert_close(conv(x), expected)


def test_minibatch_std_lets_d_see_the_variety_of_a_batch():
    discriminator = tiny_pair().discriminator.eval()
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    seen = {}
    discriminator.conv.register_forward_hook(lambda m, inputs, out: seen.update(x=inputs[0]))
    with torch.no_grad():
        scores = discriminator(images)
        features = seen["x"][:, :-1]
        expected = features.std(0, unbiased=False).mean()  # one group of 4
        torch.testing.assert_close(seen["x"][:, -1], expected.expand(4, 4, 4), atol=1e-5,
                                   rtol=1e-4)
        alike = discriminator(images[:1].expand(4, -1, -1, -1))
    assert float(seen["x"][:, -1].abs().max()) < 1e-3  # identical samples: no spread
    assert abs(float(alike[0] - scores[0])) > 1e-4  # image 0's score depends on its batch


def test_generator_fades_the_upsampled_old_output_into_the_new_one():
    generator = tiny_pair().generator.eval()
    z = torch.randn(3, 16)

    def at(level, alpha):
        generator.set_stage(level, alpha)
        with torch.no_grad():
            return generator(z)

    coarse = at(0, 1.0)
    assert coarse.shape == (3, 3, 16, 16)
    assert torch.equal(coarse, coarse[..., ::4, ::4].repeat_interleave(4, 2)
                       .repeat_interleave(4, 3))  # 4x4 images, nearest-upsampled to R
    assert torch.equal(at(1, 0.0), coarse)
    torch.testing.assert_close(at(1, 0.25), 0.75 * coarse + 0.25 * at(1, 1.0))
    assert not torch.allclose(at(1, 1.0), coarse)
    with pytest.raises(ValueError, match="no growth stage"):
        generator.set_stage(3, 1.0)


def test_discriminator_fades_the_pooled_old_input_path_into_the_new_one():
    discriminator = tiny_pair().discriminator.eval()
    images = torch.rand(4, 3, 16, 16) * 2 - 1

    def at(level, alpha):
        discriminator.set_stage(level, alpha)
        with torch.no_grad():
            return discriminator(images)

    torch.testing.assert_close(at(1, 0.0), at(0, 1.0))
    assert not torch.allclose(at(1, 1.0), at(0, 1.0))
    # at level 0 only 4x4 averages count: detail within them changes nothing
    detail = torch.zeros(4, 3, 16, 16)
    detail[..., ::2, :] = 0.1
    detail[..., 1::2, :] = -0.1
    discriminator.set_stage(0, 1.0)
    with torch.no_grad():
        torch.testing.assert_close(discriminator(images + detail), discriminator(images))


def test_reals_are_shown_at_the_stage_resolution_and_blended_while_it_fades_in():
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    four = F.avg_pool2d(images, 4)
    torch.testing.assert_close(fade_reals(images, GrowthStage(0, 1.0)),
                               F.interpolate(four, scale_factor=4))
    eight = F.avg_pool2d(images, 2)
    blended = 0.25 * F.interpolate(four, scale_factor=2) + 0.75 * eight
    torch.testing.assert_close(fade_reals(images, GrowthStage(1, 0.75)),
                               F.interpolate(blended, scale_factor=2))
    assert torch.equal(fade_reals(images, GrowthStage(2, 1.0)), images)


# --- the step ---------------------------------------------------------------------------------

def test_step_grows_resets_adam_per_phase_and_leaves_unused_layers_alone():
    step = make_step(stage_steps=2, fade_steps=1, ema_beta=0.0)
    generator, discriminator = step.pair.generator, step.pair.discriminator
    dormant = {name: value.clone() for name, value in step.pair.state_dict().items()
               if ".blocks.2." in name or "_rgb.2." in name or ".blocks.1." in name
               or "_rgb.1." in name}
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    rows = [step(images), step(images)]
    assert all(p.grad is not None for p in step.pair.parameters())  # what DDP needs
    for name, value in step.pair.state_dict().items():
        if name in dormant:
            assert torch.equal(value, dormant[name]), name  # 8x8 and 16x16 layers unused
    first_conv = generator.blocks[0][0].weight
    assert int(step.optimizers["G"].state[first_conv]["step"]) == 2
    rows.append(step(images))  # 8x8 starts fading in: new phase, fresh Adam moments
    assert int(step.optimizers["G"].state[first_conv]["step"]) == 1
    assert stage_of(generator) == stage_of(discriminator) == (1, 0.5)
    assert not torch.equal(generator.to_rgb[1].weight, dormant["generator.to_rgb.1.weight"])
    assert [(row["resolution"], row["alpha"]) for row in rows] == [(4, 1), (4, 1), (8, 0.5)]
    assert {"loss_d", "loss_g", "d_real", "d_fake", "gp", "skipped"} <= set(rows[0])

    kept = make_step(stage_steps=2, fade_steps=1, reset_optimizer=False)
    for _ in range(3):
        kept(images)
    assert int(kept.optimizers["G"].state[kept.pair.generator.blocks[0][0].weight]["step"]) == 3


def test_drift_term_is_added_to_the_critic_loss():
    step = make_step(drift=0.5)
    real, fake = torch.tensor([2.0, -2.0]), torch.tensor([1.0, 1.0])
    assert float(step.loss.discriminator(real, fake)) == pytest.approx(1.0 + 0.5 * 4.0)
    assert float(make_step(drift=0.0).loss.discriminator(real, fake)) == pytest.approx(1.0)


def test_a_few_hundred_steps_at_4x4_move_the_samples_towards_the_data():
    step = make_step(batch_size=8, stage_steps=1000)
    real = (torch.tensor(BACKGROUND) / 127.5 - 1).view(1, 3, 1, 1).repeat(8, 1, 16, 16)
    real[:, :, 4:12, 4:12] = 0.9
    target = real.mean((0, 2, 3))

    def distance() -> float:
        model = step.sample_model().eval()
        with torch.no_grad():
            return float((model(torch.randn(64, 16)).mean((0, 2, 3)) - target).norm())

    torch.manual_seed(0)
    before = distance()
    for _ in range(180):
        step(real)
    assert distance() < 0.4 * before


# --- trainer and command line -----------------------------------------------------------------

@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blobs")
    write_blob_images(folder, n=16, size=16)
    return folder


def settings(config: dict) -> list[str]:
    return [arg for key, value in config.items() for arg in ("--set", f"{key}={value}")]


def test_cli_resumes_exactly_across_a_growth_step_and_samples_once_grown(tmp_path, blobs,
                                                                          caplog):
    def train(run, steps, *extra):
        return forensics_main(["zoo", "train", "progan", "--data", str(blobs), "--out",
                               str(run), "--steps", str(steps), "--device", "cpu", "--seed", "3",
                               "--diagnostics-every", "0", "-q", *settings(GROWING), *extra])

    whole, split = tmp_path / "whole", tmp_path / "split"
    assert train(whole, 6) == 0
    assert train(split, 3) == 0  # stops right after the 8x8 fade-in step
    assert train(split, 6, "--resume") == 0  # crosses into 8x8 stable and the 16x16 fade
    assert checkpoint_sha256(split) == checkpoint_sha256(whole)  # G, D (with stage), EMA G
    documents = [json.loads((run / "config.json").read_text()) for run in (whole, split)]
    assert documents[0]["files"] == documents[1]["files"]  # Adam moments, RNG, data position
    assert [(row["resolution"], row["alpha"]) for row in read_stats(split)] == [
        (4, 1), (4, 1), (8, 0.5), (8, 1), (8, 1), (16, 0.5)]
    assert (split / "samples.png").exists() and (split / "curves.png").exists()

    early = tmp_path / "early"  # the 16x16 layers are still fading in: its own generator
    assert forensics_main(["zoo", "sample", str(split), "--n", "3", "--out", str(early),
                           "-q"]) == 0
    rows = [json.loads(line) for line in (early / "manifest.jsonl").read_text().splitlines()]
    assert {row["generator"] for row in rows} == {"progan-unfinished"}
    assert all("fading in at alpha 0.50" in row["unfinished"] for row in rows)
    assert "progan-unfinished" in caplog.text and "--steps 7" in caplog.text

    fakes = tmp_path / "fakes"
    sample = ["zoo", "sample", str(split), "--n", "5", "--out", str(fakes), "-q"]
    assert train(split, 7, "--resume") == 0
    assert forensics_main(sample) == 0
    rows = [json.loads(line) for line in (fakes / "manifest.jsonl").read_text().splitlines()]
    assert [row["seed"] for row in rows] == list(range(5))
    assert {(row["generator"], row["resolution"], row["label"]) for row in rows} == {
        ("progan", 16, "fake")} and not any("unfinished" in row for row in rows)
    assert {row["checkpoint_sha256"] for row in rows} == {checkpoint_sha256(split)}
    image = np.asarray(Image.open(fakes / rows[0]["path"]))
    assert image.shape == (16, 16, 3)
    assert len(discover_corpus(fakes).items) == 5


def test_unsupported_options_are_refused_with_a_message(tmp_path, blobs, capsys):
    base = ["zoo", "train", "progan", "--data", str(blobs), "--out", str(tmp_path / "run"),
            "--steps", "1", "--device", "cpu", "-q", *settings(TINY)]
    for option, expected in (("r1_gamma=1", "does not support config key(s) ['r1_gamma']"),
                             ("initial_resolution=32", "must not exceed 'resolution'"),
                             ("fade_steps=-1", "'fade_steps' must be an integer >= 0"),
                             ("reset_optimizer=1", "'reset_optimizer' must be true or false")):
        capsys.readouterr()
        assert forensics_main([*base, "--set", option]) == 2, option
        assert expected in capsys.readouterr().err, option
    assert not (tmp_path / "run").exists()


def test_zoo_list_shows_the_growth_schedule_and_losses_as_data(capsys):
    assert forensics_main(["zoo", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("progan (data: images): "))
    config = json.loads(lines[index].split("): ", 1)[1])
    assert {key: config[key] for key in ("initial_resolution", "stage_steps", "fade_steps",
                                         "loss", "drift", "betas")} == {
        "initial_resolution": 4, "stage_steps": 1000, "fade_steps": 1000, "loss": "wgan-gp",
        "drift": 0.001, "betas": [0.0, 0.99]}
    assert "wgan-gp" in lines[index + 1]
