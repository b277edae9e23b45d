"""Seconds per training step of each zoo model at its default config, beside a plain loop.

Usage: python benchmarks/bench_zoo.py [--models dcgan cgan stylegan cyclegan] [--steps 3]
       [--rounds 3] [--warmup 2] [--device cpu|cuda] [--threads N] [--resolution 128]
Prints one JSON object. For each model the zoo's own training step (``get_family(name)``'s
step class: losses, penalties, EMA, pools, NaN checks; mixed precision on CUDA) runs on a
fixed random batch, and so does a reference loop over the same networks written as simply as
possible: for latent models pytorch/examples' DCGAN loop (Adam, BCE, backward, step; no
regularisers, mixing, EMA or checks), for CycleGAN junyanz's recipe without the image pool and
the learning-rate schedule, for the autoencoder L1 + LSGAN with its PatchGAN. Rounds alternate between the two so machine load hits both alike;
the figures are medians over rounds. Data loading is not timed.
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


def _reference(name: str) -> Callable:
    """The plain loop to compare a family's step with: by what its networks take."""
    if get_family(name).dataset == "paired":
        return reference_cyclegan_step
    return reference_autoencoder_step if name == "autoencoder" else reference_step


def _batch(name: str, config: dict, device: torch.device) -> object:
    images = torch.rand(config["batch_size"], 3, config["resolution"], config["resolution"],
                        device=device) * 2 - 1
    kind = get_family(name).dataset
    if kind == "labelled":
        return images, torch.arange(config["batch_size"], device=device) % NUM_CLASSES
    return (images, images.flip(0)) if kind == "paired" else images


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


def bench_model(name: str, device: torch.device, steps: int, warmup: int, rounds: int,
                overrides: dict) -> dict:
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
