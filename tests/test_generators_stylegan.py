"""StyleGAN2 in the generator zoo: layers, networks, the training step, trainer and CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from crashsafe.tensors import decode_state, encode_state
from forensics.cli import main as forensics_main
from generators import (checkpoint_sha256, load_checkpoint, read_stats, sample_images,
                        train_gan)
from generators.layers import (FIRResample2d, MinibatchStd, ModulatedConv2d, fir_matrix,
                               normalize_2nd_moment)
from generators.registry import create_generator, get_family
from generators.steps_stylegan import StyleGANStep, lazy_adam
from generators_support import one_thread  # noqa: F401 (fixture)

TINY = {"resolution": 16, "z_dim": 32, "w_dim": 32, "channel_base": 256, "channel_max": 32,
        "batch_size": 8}


def tiny_pair(**overrides):
    torch.manual_seed(0)
    return create_generator("stylegan", **{**TINY, **overrides})


def real_batch(n: int = 8, size: int = 16) -> torch.Tensor:
    """Reddish images with a bright square: far from the generator's initial grey noise."""
    generator = torch.Generator().manual_seed(1)
    images = torch.empty(n, 3, size, size)
    images[:] = torch.tensor([0.6, -0.7, -0.3]).view(1, 3, 1, 1)
    for i in range(n):
        top, left = torch.randint(0, size // 2, (2,), generator=generator).tolist()
        images[i, :, top:top + size // 2, left:left + size // 2] = 0.9
    return images


# --- layers ----------------------------------------------------------------------------------

def test_fir_upsample_matches_depthwise_transposed_convolution():
    x = torch.randn(2, 3, 5, 5)
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = torch.outer(taps, taps) / taps.sum() ** 2 * 4  # 2-D [1,3,3,1] filter, gain 4
    reference = F.conv_transpose2d(x, kernel.expand(3, 1, 4, 4), stride=2, padding=1, groups=3)
    torch.testing.assert_close(FIRResample2d.upsample(5)(x), reference)


def test_fir_resampling_sizes_and_constant_preservation():
    assert fir_matrix(8, up=2, pad=(2, 1)).shape == (16, 8)
    assert fir_matrix(8, down=2, pad=(1, 1)).shape == (4, 8)
    ones = torch.ones(1, 1, 8, 8)
    # away from the zero-padded border a constant stays constant (gain up^2 spread over phases)
    torch.testing.assert_close(FIRResample2d.upsample(8)(ones)[..., 2:-2, 2:-2],
                               torch.ones(1, 1, 12, 12))
    torch.testing.assert_close(FIRResample2d.downsample(8)(ones)[..., 1:-1, 1:-1],
                               torch.ones(1, 1, 2, 2))


def modulated_conv_reference(layer: ModulatedConv2d, x: torch.Tensor,
                             w: torch.Tensor) -> torch.Tensor:
    """The textbook form: build each sample's modulated (and demodulated) weights, run a
    grouped convolution (transposed and blurred when upsampling)."""
    n, c_in, h, _ = x.shape
    styles = layer.styles(w)  # (N, C_in)
    weights = layer.weight[None] * styles[:, None, :, None, None]  # (N, C_out, C_in, k, k)
    if layer.demodulate:
        weights = weights * (weights.square().sum((2, 3, 4), keepdim=True) + 1e-8).rsqrt()
    c_out, k = weights.shape[1], weights.shape[-1]
    grouped = x.reshape(1, n * c_in, h, h)
    if layer.up is None:
        out = F.conv2d(grouped, weights.reshape(n * c_out, c_in, k, k), padding=k // 2, groups=n)
    else:
        per_group = weights.transpose(1, 2).reshape(n * c_in, c_out, k, k)
        out = layer.up(F.conv_transpose2d(grouped, per_group, stride=2, groups=n))
    return out.reshape(n, c_out, *out.shape[2:])


@pytest.mark.parametrize("demodulate, up, kernel", [(True, False, 3), (False, False, 1),
                                                    (True, True, 3)])
def test_modulated_conv_equals_per_sample_weight_modulation(demodulate, up, kernel):
    torch.manual_seed(0)
    layer = ModulatedConv2d(6, 5, kernel, 8, demodulate=demodulate, up_from=4 if up else None)
    x, w = torch.randn(3, 6, 4, 4), torch.randn(3, 8)
    out = layer(x, w)
    assert out.shape == (3, 5, 8 if up else 4, 8 if up else 4)
    torch.testing.assert_close(out, modulated_conv_reference(layer, x, w), rtol=1e-4, atol=1e-5)


def test_demodulation_gives_unit_output_std_for_unit_input():
    torch.manual_seed(0)
    layer = ModulatedConv2d(128, 64, 3, 16)
    x = torch.randn(16, 128, 16, 16)
    with torch.no_grad():
        layer.affine.weight.mul_(5)  # styles far from 1: demodulation must undo their scale
        out = layer(x, torch.randn(16, 16))[..., 1:-1, 1:-1]  # interior: no zero padding
    assert out.std().item() == pytest.approx(1.0, abs=0.05)


def test_minibatch_std_appends_the_group_standard_deviation():
    x = torch.randn(8, 3, 4, 4)
    out = MinibatchStd(group_size=4)(x)
    assert out.shape == (8, 4, 4, 4)
    groups = x.reshape(4, 2, 3, 4, 4)  # group g: samples g, g + 2, g + 4, g + 6
    expected = groups.std(0, unbiased=False).mean((1, 2, 3))  # (2,)
    torch.testing.assert_close(out[:, 3, 0, 0], expected.repeat(4), rtol=1e-4, atol=1e-5)
    assert MinibatchStd(group_size=4)(torch.randn(6, 3, 4, 4)).shape == (6, 4, 4, 4)  # G = 3


def test_normalize_2nd_moment():
    z = normalize_2nd_moment(torch.randn(5, 7) * 3)
    torch.testing.assert_close(z.square().mean(1), torch.ones(5))


# --- networks --------------------------------------------------------------------------------

@pytest.mark.parametrize("resolution", [16, 32])
def test_networks_map_latents_to_images_to_logits(resolution):
    pair = tiny_pair(resolution=resolution)
    generator, discriminator = pair.generator, pair.discriminator
    images = generator(torch.randn(4, 32))
    assert images.shape == (4, 3, resolution, resolution)
    assert torch.isfinite(images).all()
    assert discriminator(images).shape == (4,)
    assert generator.num_ws == 2 * int(math.log2(resolution)) - 2


def test_channel_widths_follow_the_config():
    pair = tiny_pair(resolution=32, channel_base=512, channel_max=64)
    synthesis = pair.generator.synthesis
    widths = [block.torgb.conv.weight.shape[1] for block in synthesis.blocks]
    assert widths == [64, 64, 32, 16]  # min(512 / r, 64) for r = 4, 8, 16, 32


def test_invalid_config_values_are_rejected():
    with pytest.raises(ValueError, match="resolution"):
        create_generator("stylegan", resolution=48)
    with pytest.raises(ValueError, match="style_mixing"):
        create_generator("stylegan", style_mixing=1.5)


def test_truncation_zero_gives_the_average_image_for_every_latent():
    pair = tiny_pair()
    generator = pair.generator.eval()
    with torch.no_grad():
        generator.mapping.w_avg.normal_()
        images = generator(torch.randn(3, 32), truncation=0.0)
        free = generator(torch.randn(3, 32))
    torch.testing.assert_close(images[0].expand_as(images), images)
    assert not torch.allclose(free[0], free[1])


def test_eval_mode_images_depend_on_the_latent_only():
    generator = tiny_pair().generator.eval()
    with torch.no_grad():
        generator.synthesis.blocks[1].convs[0].noise.strength.fill_(1.0)
        z = torch.randn(2, 32)
        torch.testing.assert_close(generator(z), generator(z))


def test_style_mixing_takes_the_late_layers_from_the_second_latent():
    generator = tiny_pair().generator.eval()
    z1, z2 = torch.randn(2, 32), torch.randn(2, 32)
    with torch.no_grad():
        mixed, ws = generator(z1, mix=(z2, 3), return_ws=True)
        w1, w2 = generator.mapping(z1), generator.mapping(z2)
    torch.testing.assert_close(ws[:, :3], w1[:, None].expand(-1, 3, -1))
    torch.testing.assert_close(ws[:, 3:], w2[:, None].expand(-1, generator.num_ws - 3, -1))
    assert not torch.allclose(mixed, generator(z1)) and not torch.allclose(mixed, generator(z2))


def test_w_avg_tracks_the_mean_w_when_asked():
    generator = tiny_pair(w_avg_beta=0.5).generator
    z = torch.randn(16, 32)
    with torch.no_grad():
        generator(z)
        assert torch.count_nonzero(generator.mapping.w_avg) == 0
        generator(z, update_w_avg=True)
        torch.testing.assert_close(generator.mapping.w_avg, generator.mapping(z).mean(0) * 0.5)


# --- training step ---------------------------------------------------------------------------

def make_step(**overrides) -> StyleGANStep:
    pair = tiny_pair(**overrides)
    step_class = get_family("stylegan").resolve_step_class()
    assert step_class is StyleGANStep
    return step_class(pair, torch.device("cpu"), amp=False)


def test_lazy_regularisation_corrects_lr_and_betas():
    params = [torch.nn.Parameter(torch.zeros(1))]
    group = lazy_adam(params, 0.0025, (0.0, 0.99), 16).param_groups[0]
    assert group["lr"] == pytest.approx(0.0025 * 16 / 17)
    assert group["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)))
    assert lazy_adam(params, 0.0025, (0.0, 0.99), None).param_groups[0]["lr"] == 0.0025


def test_a_few_steps_lower_the_discriminator_loss():
    step = make_step()
    real = real_batch()
    torch.manual_seed(0)
    losses = [step(real)["loss_d"] for _ in range(8)]
    assert losses[-1] < losses[0] - 0.1, losses


def test_regularisers_run_on_their_intervals():
    step = make_step(r1_interval=2, pl_weight=2.0, pl_interval=2)
    real = real_batch()
    torch.manual_seed(0)
    rows = [step(real) for _ in range(3)]
    assert [("r1" in row, "pl" in row) for row in rows] == [(True, True), (False, False),
                                                           (True, True)]
    assert all(row["skipped"] == 0 and math.isfinite(row["loss_g"]) for row in rows)
    assert step.pl_mean.item() > 0


def test_ema_generator_lags_behind_and_equals_it_without_averaging():
    real = real_batch()
    for ema_kimg, equal in ((10.0, False), (0.0, True)):
        step = make_step(ema_kimg=ema_kimg)
        torch.manual_seed(0)
        for _ in range(3):
            step(real)
        ema, generator = step.sample_model(), step.pair.generator
        assert not ema.training
        same = all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(),
                                                     generator.state_dict().values()))
        assert same is equal


def test_step_state_round_trip_continues_identically():
    real = real_batch()
    first = make_step(r1_interval=3, pl_weight=2.0, pl_interval=3)
    torch.manual_seed(0)
    for _ in range(3):
        first(real)
    tensors, skeleton = encode_state(first.state_dict())  # as checkpoints store it
    second = make_step(r1_interval=3, pl_weight=2.0, pl_interval=3)
    second.pair.load_state_dict(first.pair.state_dict())
    second.load_state_dict(decode_state(tensors, skeleton))

    rows = []
    for step in (first, second):  # the next step regularises both nets
        torch.manual_seed(7)
        rows.append(step(real))
    assert rows[0] == rows[1] and "r1" in rows[0] and "pl" in rows[0]
    for a, b in ((first.pair, second.pair), (first.sample_model(), second.sample_model())):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), name


# --- trainer, sampling and the command line --------------------------------------------------

def tiny_cli_config() -> list[str]:
    return [arg for key, value in TINY.items() if key != "resolution"
            for arg in ("--set", f"{key}={value}")]


@pytest.fixture(scope="module")
def bundled_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundled") / "real"
    assert forensics_main(["corpus", "bundled", str(folder), "--size", "32", "--count", "64",
                           "--seed", "1", "-q"]) == 0
    return folder


def test_trainer_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, bundled_corpus):
    paths = sorted(bundled_corpus.rglob("*.png"))
    options = {"seed": 2, "device": "cpu", "progress": False, "diagnostics_every": 0,
               "config_overrides": {**TINY, "r1_interval": 2, "pl_weight": 2.0,
                                    "pl_interval": 2}}
    train_gan("stylegan", paths, tmp_path / "split", steps=3, **options)
    train_gan("stylegan", paths, tmp_path / "split", steps=5, resume=True, **options)
    train_gan("stylegan", paths, tmp_path / "whole", steps=5, **options)
    assert checkpoint_sha256(tmp_path / "split") == checkpoint_sha256(tmp_path / "whole")
    pair, _ = load_checkpoint(tmp_path / "whole")
    assert pair.generator_ema is not None  # the EMA generator is what samples


def test_cli_trains_resumes_and_samples_with_truncation(tmp_path, bundled_corpus):
    run, fakes = tmp_path / "run", tmp_path / "fakes"
    train = ["zoo", "train", "stylegan", "--data", str(bundled_corpus), "--out", str(run),
             "--resolution", "32", "-q", *tiny_cli_config()]
    assert forensics_main([*train, "--steps", "4"]) == 0
    assert forensics_main([*train, "--steps", "6", "--resume"]) == 0
    assert [row["step"] for row in read_stats(run)] == [1, 2, 3, 4, 5, 6]
    assert (run / "samples.png").exists() and (run / "curves.png").exists()
    assert forensics_main(["zoo", "sample", str(run), "--n", "8", "--out", str(fakes),
                           "--seed", "3", "-q"]) == 0
    rows = [json.loads(line) for line in (fakes / "manifest.jsonl").read_text().splitlines()]
    assert [row["seed"] for row in rows] == list(range(3, 11))
    assert {row["generator"] for row in rows} == {"stylegan"}
    first = np.asarray(Image.open(fakes / rows[0]["path"]))
    assert first.shape == (32, 32, 3)

    # truncation psi = 0: every seed gives the average image; seeds still name the images
    truncated = sample_images(run, 3, tmp_path / "psi0", seed=0, truncation=0.0,
                              device="cpu", progress=False)
    images = [np.asarray(Image.open(tmp_path / "psi0" / row["path"])) for row in truncated]
    assert all(row["truncation"] == 0.0 for row in truncated)
    assert all(np.array_equal(images[0], image) for image in images[1:])
    again = sample_images(run, 1, tmp_path / "again", seed=3, device="cpu", progress=False)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again" / again[0]["path"])), first)
