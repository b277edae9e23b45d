"""Seconds per training step of each zoo model at its default config, beside a plain loop.

Usage: python benchmarks/bench_zoo.py [--models dcgan cgan stylegan cyclegan] [--steps 3]
       [--rounds 3] [--warmup 2] [--device cpu|cuda] [--threads N] [--resolution 128]
Prints one JSON object. For each model the zoo's own training step (``get_family(name)``'s
step class: losses, penalties, EMA, pools, NaN checks; mixed precision on CUDA) runs on a
fixed random batch, and so does a reference loop over the same networks written as simply as
possible: for latent models pytorch/examples' DCGAN loop (Adam, BCE, backward, step; no
regularisers, mixing, EMA or checks), for CycleGAN junyanz's recipe without the image pool and
the learning-rate schedule, for pix2pix junyanz's BCE + 100 x L1 update, for the autoencoder
L1 + LSGAN with its PatchGAN, for BigGAN its hinge loop with ``d_steps`` D updates per G
update, for ProGAN WGAN-GP with drift (both timed fully grown), for DDPM Ho et al.'s
Algorithm 1 (noise-prediction MSE, Adam, gradient clipping; no EMA). Rounds alternate
between the two so machine load hits both alike; the figures are medians over rounds. Data
loading is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Callable

import itertools

import torch
import torch.nn.functional as F

from generators.registry import create_generator, get_family, list_generators

NUM_CLASSES = 10  # the conditional model's default


def reference_step(pair, device: torch.device) -> Callable[[object], None]:
    """The simplest adversarial loop over ``pair``'s nets: non-saturating BCE, Adam."""
    generator, discriminator = pair.generator, pair.discriminator
    config = pair.config
    opt_g = torch.optim.Adam(generator.parameters(), lr=config["lr"], betas=config["betas"])
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config["lr"], betas=config["betas"])
    z_dim = generator.z_dim

    def step(batch: object) -> None:
        real, *condition = batch if isinstance(batch, tuple) else (batch,)
        z = torch.randn(real.shape[0], z_dim, device=device)
        fake = generator(z, *condition)
        opt_d.zero_grad()
        real_out = discriminator(real, *condition)
        fake_out = discriminator(fake.detach(), *condition)
        loss_d = (F.binary_cross_entropy_with_logits(real_out, torch.ones_like(real_out))
                  + F.binary_cross_entropy_with_logits(fake_out, torch.zeros_like(fake_out)))
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        out = discriminator(fake, *condition)
        F.binary_cross_entropy_with_logits(out, torch.ones_like(out)).backward()
        opt_g.step()

    return step


def reference_cyclegan_step(pair, device: torch.device) -> Callable[[object], None]:
    """junyanz's CycleGAN update written out: LSGAN, cycle x10, identity x5, D loss halved."""
    g_ab, g_ba, d_a, d_b = pair.G_AB, pair.G_BA, pair.D_A, pair.D_B
    config = pair.config
    opt_g = torch.optim.Adam(itertools.chain(g_ab.parameters(), g_ba.parameters()),
                             lr=config["lr"], betas=config["betas"])
    opt_d = torch.optim.Adam(itertools.chain(d_a.parameters(), d_b.parameters()),
                             lr=config["lr"], betas=config["betas"])

    def gan(output: torch.Tensor, target: float) -> torch.Tensor:
        return F.mse_loss(output, torch.full_like(output, target))

    def step(batch: object) -> None:
        real_a, real_b = batch
        fake_b, fake_a = g_ab(real_a), g_ba(real_b)
        d_a.requires_grad_(False)
        d_b.requires_grad_(False)
        opt_g.zero_grad()
        loss_g = (gan(d_b(fake_b), 1) + gan(d_a(fake_a), 1)
                  + 10 * (F.l1_loss(g_ba(fake_b), real_a) + F.l1_loss(g_ab(fake_a), real_b))
                  + 5 * (F.l1_loss(g_ab(real_b), real_b) + F.l1_loss(g_ba(real_a), real_a)))
        loss_g.backward()
        opt_g.step()
        d_a.requires_grad_(True)
        d_b.requires_grad_(True)
        opt_d.zero_grad()
        loss_d = 0.5 * (gan(d_a(real_a), 1) + gan(d_a(fake_a.detach()), 0)
                        + gan(d_b(real_b), 1) + gan(d_b(fake_b.detach()), 0))
        loss_d.backward()
        opt_d.step()

    return step


def reference_autoencoder_step(pair, device: torch.device) -> Callable[[object], None]:
    """AutoGAN-style update written out: L1 reconstruction plus adv_weight x LSGAN for G, then
    the PatchGAN on the crops against their reconstructions."""
    config = pair.config
    opt_g = torch.optim.Adam(pair.generator.parameters(), lr=config["lr"], betas=config["betas"])
    opt_d = torch.optim.Adam(pair.discriminator.parameters(), lr=config["lr"],
                             betas=config["betas"])

    def gan(output: torch.Tensor, target: float) -> torch.Tensor:
        return F.mse_loss(output, torch.full_like(output, target))

    def step(real: torch.Tensor) -> None:
        fake = pair.generator(real)
        pair.discriminator.requires_grad_(False)
        opt_g.zero_grad()
        loss_g = F.l1_loss(fake, real) + config["adv_weight"] * gan(pair.discriminator(fake), 1)
        loss_g.backward()
        opt_g.step()
        pair.discriminator.requires_grad_(True)
        opt_d.zero_grad()
        loss_d = 0.5 * (gan(pair.discriminator(real), 1)
                        + gan(pair.discriminator(fake.detach()), 0))
        loss_d.backward()
        opt_d.step()

    return step


def reference_biggan_step(pair, device: torch.device) -> Callable[[object], None]:
    """BigGAN's update written out: d_steps hinge D updates, each on its share of the batch
    with fakes of the same classes, then one G update; no orthogonal regulariser, EMA or
    checks."""
    generator, discriminator = pair.generator, pair.discriminator
    config = pair.config
    opt_g = torch.optim.Adam(generator.parameters(), lr=config["lr"], betas=config["betas"])
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config["lr_d"],
                             betas=config["betas"])

    def step(batch: object) -> None:
        real, labels = batch
        for real_part, label_part in zip(real.chunk(config["d_steps"]),
                                         labels.chunk(config["d_steps"])):
            z = torch.randn(len(real_part), generator.z_dim, device=device)
            with torch.no_grad():
                fake = generator(z, label_part)
            opt_d.zero_grad()
            loss_d = (F.relu(1 - discriminator(real_part, label_part)).mean()
                      + F.relu(1 + discriminator(fake, label_part)).mean())
            loss_d.backward()
            opt_d.step()
        z = torch.randn(len(real_part), generator.z_dim, device=device)
        opt_g.zero_grad()
        (-discriminator(generator(z, label_part), label_part).mean()).backward()
        opt_g.step()

    return step


def reference_pix2pix_step(pair, device: torch.device) -> Callable[[object], None]:
    """junyanz's pix2pix update written out: D on (input, target) vs (input, G(input)) with
    BCE, halved, then G on BCE + 100 x L1; no checks or statistics."""
    generator, discriminator = pair.generator, pair.discriminator
    config = pair.config
    opt_g = torch.optim.Adam(generator.parameters(), lr=config["lr"], betas=config["betas"])
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config["lr"], betas=config["betas"])

    def bce(output: torch.Tensor, target: float) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(output, torch.full_like(output, target))

    def step(batch: object) -> None:
        inputs, targets = batch
        fake = generator(inputs)
        opt_d.zero_grad()
        loss_d = 0.5 * (bce(discriminator(torch.cat([inputs, fake.detach()], 1)), 0)
                        + bce(discriminator(torch.cat([inputs, targets], 1)), 1))
        loss_d.backward()
        opt_d.step()
        discriminator.requires_grad_(False)
        opt_g.zero_grad()
        loss_g = (bce(discriminator(torch.cat([inputs, fake], 1)), 1)
                  + config["l1_weight"] * F.l1_loss(fake, targets))
        loss_g.backward()
        opt_g.step()
        discriminator.requires_grad_(True)

    return step


def reference_progan_step(pair, device: torch.device) -> Callable[[object], None]:
    """Karras et al.'s WGAN-GP update written out, with both nets fully grown: critic loss
    D(G(z)) - D(x) + gp_weight x gradient penalty + drift x D(x)^2, then G on -D(G(z)); no
    growth schedule, EMA or checks."""
    generator, discriminator = pair.generator, pair.discriminator
    for net in (generator, discriminator):
        net.set_stage(net.num_levels - 1, 1.0)
    config = pair.config
    opt_g = torch.optim.Adam(generator.parameters(), lr=config["lr"], betas=config["betas"])
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config["lr"], betas=config["betas"])

    def step(real: torch.Tensor) -> None:
        fake = generator(torch.randn(real.shape[0], generator.z_dim, device=device))
        opt_d.zero_grad()
        real_out = discriminator(real)
        mix = torch.rand(real.shape[0], 1, 1, 1, device=device)
        mixed = (mix * real + (1 - mix) * fake.detach()).requires_grad_(True)
        (grad,) = torch.autograd.grad(discriminator(mixed).sum(), mixed, create_graph=True)
        penalty = (grad.flatten(1).norm(dim=1) - 1).square().mean()
        loss_d = (discriminator(fake.detach()).mean() - real_out.mean()
                  + config["gp_weight"] * penalty + config["drift"] * real_out.square().mean())
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        (-discriminator(fake).mean()).backward()
        opt_g.step()

    return step


def reference_ddpm_step(pair, device: torch.device) -> Callable[[object], None]:
    """Ho et al.'s Algorithm 1 written out: t uniform, x_t in closed form, MSE against the
    noise, Adam with the gradient norm clipped to grad_clip; no EMA, checks or statistics."""
    model, config = pair.generator, pair.config
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"], betas=config["betas"])
    signal = model.schedule.alphas_cumprod

    def step(x0: torch.Tensor) -> None:
        t = torch.randint(0, len(signal), (x0.shape[0],), device=device)
        noise = torch.randn_like(x0)
        a = signal[t].view(-1, 1, 1, 1)
        loss = F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t), noise)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"])
        optimizer.step()

    return step


def _reference(name: str) -> Callable:
    """The plain loop to compare a family's step with: by what its networks take."""
    if name == "ddpm":
        return reference_ddpm_step
    if name == "progan":
        return reference_progan_step
    if get_family(name).dataset == "aligned":
        return reference_pix2pix_step
    if name == "biggan":
        return reference_biggan_step
    if get_family(name).dataset == "paired":
        return reference_cyclegan_step
    return reference_autoencoder_step if name == "autoencoder" else reference_step


def _batch(name: str, config: dict, device: torch.device) -> object:
    images = torch.rand(config["batch_size"], 3, config["resolution"], config["resolution"],
                        device=device) * 2 - 1
    kind = get_family(name).dataset
    if kind == "labelled":
        return images, torch.arange(config["batch_size"], device=device) % NUM_CLASSES
    return (images, images.flip(0)) if kind in ("paired", "aligned") else images


def _seconds_per_step(step: Callable[[object], object], batch: object, steps: int,
                      device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def _steady_state(name: str, overrides: dict) -> dict:
    """``overrides`` plus what times a family in its steady state: progan fully grown from
    the first step (its schedule would spend a short benchmark at 4x4)."""
    if name != "progan":
        return overrides
    resolution = overrides.get("resolution", list_generators()[name]["resolution"])
    return {**overrides, "initial_resolution": resolution}


def bench_model(name: str, device: torch.device, steps: int, warmup: int, rounds: int,
                overrides: dict) -> dict:
    overrides = _steady_state(name, overrides)
    torch.manual_seed(0)
    zoo_pair = create_generator(name, **overrides).to(device)
    torch.manual_seed(0)
    plain_pair = create_generator(name, **overrides).to(device)
    config = zoo_pair.config
    batch = _batch(name, config, device)
    zoo = get_family(name).resolve_step_class()(zoo_pair, device, amp=device.type == "cuda")
    plain = _reference(name)(plain_pair, device)
    for step in (zoo, plain):
        _seconds_per_step(step, batch, warmup, device)
    timings: dict[str, list[float]] = {"zoo": [], "reference": []}
    for _ in range(rounds):
        timings["zoo"].append(_seconds_per_step(zoo, batch, steps, device))
        timings["reference"].append(_seconds_per_step(plain, batch, steps, device))
    zoo_s, ref_s = (statistics.median(timings[k]) for k in ("zoo", "reference"))
    return {"resolution": config["resolution"], "batch_size": config["batch_size"],
            "zoo_s_per_step": round(zoo_s, 4), "reference_s_per_step": round(ref_s, 4),
            "zoo_over_reference": round(zoo_s / ref_s, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", help="default: every registered model")
    ap.add_argument("--steps", type=int, default=3, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--resolution", type=int,
                    help="train every model at this side instead of its default (e.g. 128, 256)")
    args = ap.parse_args()
    overrides = {"resolution": args.resolution} if args.resolution else {}
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    models = args.models or list(list_generators())
    results = {name: bench_model(name, device, args.steps, args.warmup, args.rounds, overrides)
               for name in models}
    print(json.dumps({
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor()
        or platform.machine(),
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 1), "torch": torch.__version__,
        "steps_per_round": args.steps, "rounds": args.rounds, "models": results,
    }, indent=2))


if __name__ == "__main__":
    main()
