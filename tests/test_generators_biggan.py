"""BigGAN in the generator zoo: conditional nets, orthogonal regulariser, truncation, the step,
and the command line (train, exact resume, per-class truncated samples)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from forensics.cli import main as cli
from generators import checkpoint_sha256, load_checkpoint, read_stats
from generators.images import tensor_to_uint8
from generators.nets.biggan import ConditionalBatchNorm, SelfAttention, truncated_latents
from generators.registry import create_generator, get_family
from generators.sampling import generate, seed_latents
from generators.steps_biggan import orthogonal_penalty
from generators_support import one_thread, write_class_folders  # noqa: F401 (fixture)

COLOURS = {"blue": (30, 60, 220), "red": (220, 40, 30)}
TINY = {"resolution": 16, "g_ch": 16, "d_ch": 16, "shared_dim": 16, "attention": 8,
        "num_classes": 2}
CLI_TINY = ["--resolution", "16", "--batch-size", "8", "--set", "g_ch=16", "--set", "d_ch=16",
            "--set", "shared_dim=16", "--set", "attention=8", "--device", "cpu", "-q"]


def tiny_pair(**overrides):
    torch.manual_seed(0)
    return create_generator("biggan", **{**TINY, **overrides})


@pytest.fixture(scope="module")
def class_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("classes")
    write_class_folders(root, COLOURS, n=16)
    return root


def train_cli(data, run, steps, *extra):
    return cli(["zoo", "train", "biggan", "--data", str(data), "--out", str(run), "--steps",
                str(steps), *CLI_TINY, *extra])


@pytest.fixture(scope="module")
def trained(class_root, tmp_path_factory):
    """40 steps on red and blue images through the command line (lr raised and one D update
    per G update for a short run)."""
    run = tmp_path_factory.mktemp("biggan") / "run"
    assert train_cli(class_root, run, 40, "--set", "lr=4e-4", "--set", "lr_d=4e-4",
                     "--set", "ema_beta=0.9", "--set", "d_steps=1",
                     "--diagnostics-every", "0") == 0
    return run


# --- networks --------------------------------------------------------------------------------

@pytest.mark.parametrize("resolution, attention", [(16, 8), (32, 16), (32, 0)])
def test_nets_shapes_and_the_attention_resolution(resolution, attention):
    pair = tiny_pair(resolution=resolution, attention=attention).eval()
    z, labels = torch.randn(4, 120), torch.tensor([0, 1, 0, 1])
    images = pair.generator(z, labels)
    assert images.shape == (4, 3, resolution, resolution) and images.abs().max() <= 1
    assert pair.discriminator(images, labels).shape == (4,)
    if attention:  # G's and D's attention layers both see maps of the asked resolution
        seen = []
        for net in (pair.generator, pair.discriminator):
            net.attention.register_forward_hook(lambda m, args, out: seen.append(out.shape[-1]))
        pair.discriminator(pair.generator(z, labels), labels)
        assert seen == [attention, attention]
    else:
        assert pair.generator.attention is None and pair.discriminator.attention is None


def test_conditional_batch_norm_and_the_nets_depend_on_the_class():
    torch.manual_seed(0)
    norm = ConditionalBatchNorm(8, 6).eval()
    x = torch.randn(1, 8, 4, 4).expand(2, -1, -1, -1)
    out = norm(x, torch.tensor([[1.0, 0, 0, 0.5, 0.5, 0.5], [0, 1.0, 0, 0.5, 0.5, 0.5]]))
    assert not torch.allclose(out[0], out[1])  # one input, two conditions, two outputs
    pair = tiny_pair().eval()
    z = torch.randn(1, 120).expand(2, -1)
    labels = torch.tensor([0, 1])
    images = pair.generator(z, labels)
    assert (images[0] - images[1]).abs().mean() > 1e-3  # same z, other class: other image
    logits = pair.discriminator(images, labels)
    assert not torch.allclose(logits, pair.discriminator(images, 1 - labels))
    with pytest.raises(ValueError, match="class indices"):
        pair.generator(z)


def test_every_latent_chunk_reaches_the_image():
    """Hierarchical latent: the input layer and each block read their own chunk of z."""
    pair = tiny_pair().eval()  # 16 px: 2 blocks, z in 3 chunks of 40
    z, labels = torch.randn(1, 120), torch.tensor([1])
    base = pair.generator(z, labels)
    for chunk in range(3):
        moved = z.clone()
        moved[:, 40 * chunk:40 * (chunk + 1)] += 1.0
        assert (pair.generator(moved, labels) - base).abs().mean() > 1e-4, chunk


def test_self_attention_starts_as_identity_then_mixes_positions():
    torch.manual_seed(0)
    attention = SelfAttention(16)
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(attention(x), x)  # gamma starts at 0
    with torch.no_grad():
        attention.gamma.fill_(1.0)
    x2 = x.clone()
    x2[:, :, 0, 0] += 5.0
    changed = (attention(x2) - x2 - (attention(x) - x)).abs().sum(1)
    assert changed[:, 7, 7].min() > 0  # one corner moved the far corner's attention output


def test_every_conv_and_linear_is_spectrally_normalised():
    pair = tiny_pair()
    for net in (pair.generator, pair.discriminator):
        layers = [m for m in net.modules()
                  if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        assert layers and all(hasattr(m, "parametrizations") for m in layers)
    assert hasattr(pair.discriminator.embed, "parametrizations")  # the projection too
    pair.eval()  # the weights in use have a largest singular value of about 1
    sigma = torch.linalg.matrix_norm(pair.generator.linear.weight.detach(), ord=2)
    assert abs(float(sigma) - 1) < 0.05


# --- regulariser and truncation --------------------------------------------------------------

def test_orthogonal_penalty_is_zero_only_for_orthogonal_rows():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(16, 16))
    rows = q[:6] * torch.arange(1.0, 7.0)[:, None]  # orthogonal rows of any norm
    assert float(orthogonal_penalty([rows])) < 1e-10
    conv = q[:8].reshape(8, 2, 2, 4)  # a conv weight is read as (out, fan_in)
    assert float(orthogonal_penalty([conv])) < 1e-10
    skewed = rows.clone()
    skewed[0] += 0.1 * skewed[1]
    assert float(orthogonal_penalty([skewed])) > 1e-3
    tall = torch.randn(20, 5)  # the short form for tall matrices gives the same sum
    gram = tall @ tall.T
    direct = (gram - torch.diag(gram.diagonal())).square().sum()
    assert torch.allclose(orthogonal_penalty([tall]), direct, rtol=1e-4)
    assert torch.allclose(orthogonal_penalty([rows, skewed, tall]),
                          orthogonal_penalty([skewed]) + direct, rtol=1e-4)


def test_truncation_maps_latents_into_the_threshold_deterministically():
    z = seed_latents(range(200), 120)
    for psi in (0.5, 1.0):
        truncated = truncated_latents(z, psi)
        assert truncated.abs().max() <= psi
        assert truncated.std() < 0.75 * z.std()  # less spread: less variety
        assert torch.equal(truncated, truncated_latents(z, psi))
        order = z[0].argsort()
        assert bool((truncated[0][order].diff() >= 0).all())  # monotone: close stays close
    assert truncated_latents(z, 0.5).std() < truncated_latents(z, 1.0).std()
    with pytest.raises(ValueError, match="threshold"):
        truncated_latents(z, 0.0)


# --- the step ----------------------------------------------------------------------------------

def one_step(pair) -> tuple:
    """The family's step on ``pair`` and its statistics after one call on 8 images."""
    step = get_family("biggan").resolve_step_class()(pair, torch.device("cpu"))
    torch.manual_seed(1)
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    return step, step((images, torch.tensor([0, 1] * 4)))


@pytest.mark.parametrize("loss", ["hinge", "nonsaturating"])
def test_step_updates_d_d_steps_times_per_g_update(loss):
    seen = []
    pair = tiny_pair(loss=loss)
    pair.discriminator.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    step, stats = one_step(pair)
    assert seen == [8, 8, 4]  # 2 x (4 real + 4 fake) for D, then 4 fakes for G
    for name, updates in (("D", 2), ("G", 1)):
        states = step.optimizers[name].state_dict()["state"].values()
        assert {float(state["step"]) for state in states} == {updates}, name
    assert stats["skipped"] == 0 and all(np.isfinite(list(stats.values())))


def test_orthogonal_regulariser_moves_only_the_generator():
    plain, regularised = tiny_pair(ortho_reg=0.0), tiny_pair(ortho_reg=1e-2)
    assert one_step(plain)[1]["ortho"] == 0
    assert one_step(regularised)[1]["ortho"] > 0
    for a, b in zip(plain.discriminator.parameters(), regularised.discriminator.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(plain.generator.linear.parametrizations.weight.original,
                           regularised.generator.linear.parametrizations.weight.original)


# --- options refused --------------------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ({"loss": "wgan-gp"}, r"does not support loss='wgan-gp'"),
    ({"r1_gamma": 1.0}, r"does not support config key\(s\) \['r1_gamma'\]"),
    ({"attention": 16}, r"no block ending at resolution 16"),
    ({"attention": 12}, r"'attention' must be 0 \(none\) or one of"),
    ({"z_dim": 100}, r"'z_dim' must split into 3 equal chunks"),
    ({"batch_size": 9}, r"multiple of it"),
])
def test_unsupported_options_are_refused_with_a_message(override, message):
    with pytest.raises(ValueError, match=message):
        create_generator("biggan", **{**TINY, **override})


def test_cli_refuses_an_unsupported_loss(class_root, tmp_path, capsys):
    assert train_cli(class_root, tmp_path / "run", 1, "--set", "loss=lsgan") == 2
    assert "does not support loss='lsgan'" in capsys.readouterr().err
    assert not (tmp_path / "run" / "config.json").exists()


# --- training through the command line --------------------------------------------------------

def test_cli_resume_equals_an_uninterrupted_run(class_root, tmp_path):
    """EMA on, two D updates per G update: 3 + 3 steps give the bits of 6."""
    assert train_cli(class_root, tmp_path / "whole", 6) == 0
    assert train_cli(class_root, tmp_path / "split", 3) == 0
    assert train_cli(class_root, tmp_path / "split", 6, "--resume") == 0
    documents = [json.loads((tmp_path / run / "config.json").read_text())
                 for run in ("whole", "split")]
    assert documents[0]["config"]["d_steps"] == 2 and documents[0]["config"]["ema_beta"] > 0
    assert documents[0]["files"] == documents[1]["files"]  # weights, EMA, optimizers, RNG
    assert checkpoint_sha256(tmp_path / "whole") == checkpoint_sha256(tmp_path / "split")
    pair, _ = load_checkpoint(tmp_path / "split")
    assert pair.generator_ema is not None
    rows = read_stats(tmp_path / "split")
    assert [row["step"] for row in rows] == list(range(1, 7))
    assert all(row["ortho"] > 0 and row["skipped"] == 0 for row in rows)


def test_training_learns_the_classes_and_writes_its_run_files(trained):
    for name in ("samples.png", "curves.png", "stats.jsonl", "weights.safetensors"):
        assert (trained / name).exists(), name
    pair, document = load_checkpoint(trained)
    assert document["extra"]["classes"] == ["blue", "red"]
    assert document["config"]["num_classes"] == 2
    seeds = range(16)
    blue, red = (generate(pair.sample_model(), seeds, torch.device("cpu"),
                          labels=torch.full((16,), k)).mean((0, 2, 3)) for k in (0, 1))
    # The class steers the EMA generator: red samples are redder, blue ones bluer.
    assert red[0] - blue[0] > 0.05 and blue[2] - red[2] > 0.05


def test_sampling_one_class_with_truncation_records_both(trained, tmp_path):
    out = tmp_path / "fakes"
    assert cli(["zoo", "sample", str(trained), "--n", "3", "--out", str(out), "--class", "red",
                "--truncation", "0.5", "--seed", "2", "--device", "cpu", "-q"]) == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").open()]
    assert [(row["path"], row["class"], row["truncation"], row["seed"]) for row in rows] == [
        (f"red/seed{s:06d}_psi0.5.png", "red", 0.5, s) for s in (2, 3, 4)]
    assert {row["generator"] for row in rows} == {"biggan"}
    assert {row["checkpoint_sha256"] for row in rows} == {checkpoint_sha256(trained)}
    pair, _ = load_checkpoint(trained)
    labels = torch.ones(3, dtype=torch.int64)
    expected = generate(pair.sample_model(), [2, 3, 4], torch.device("cpu"), labels=labels,
                        truncation=0.5)
    untruncated = generate(pair.sample_model(), [2, 3, 4], torch.device("cpu"), labels=labels)
    assert not torch.equal(expected, untruncated)
    for row, image in zip(rows, tensor_to_uint8(expected)):
        with Image.open(out / row["path"]) as written:
            assert np.array_equal(np.asarray(written), image)
