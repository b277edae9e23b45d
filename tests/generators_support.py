"""Helpers shared by the generator-zoo tests: tiny synthetic image folders and configs."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

BACKGROUND = (200, 40, 90)
FOREGROUND = (250, 180, 30)
TINY = {"resolution": 16, "ngf": 8, "ndf": 8, "nz": 16, "batch_size": 8}

# `zoo train` options of the families after the first four, each at a size that trains a step
# in a fraction of a second, reading a bundled corpus (biggan: classes from its tone field).
FAMILY_RUNS = {
    "pix2pix": ["--resolution", "32", "--batch-size", "4", "--set", "ngf=8", "--set", "ndf=8"],
    "progan": ["--resolution", "16", "--batch-size", "4", "--set", "latent_dim=16",
               "--set", "channel_base=128", "--set", "channel_max=16", "--set", "stage_steps=2",
               "--set", "fade_steps=1"],
    "biggan": ["--resolution", "16", "--batch-size", "8", "--set", "g_ch=16", "--set", "d_ch=16",
               "--set", "shared_dim=16", "--set", "attention=8", "--class-key", "tone"],
    "ddpm": ["--resolution", "16", "--batch-size", "8", "--set", "channels=8",
             "--set", "channel_mults=[1, 2]", "--set", "num_res_blocks=1",
             "--set", "attention_resolution=8", "--set", "timesteps=100",
             "--set", "sampling_steps=4", "--set", "preview_steps=2"],
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny nets on shared cores run several times faster on one thread than on two
    (import this fixture into a test module to use it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_blob_images(folder: pathlib.Path, n: int = 64, size: int = 32,
                      seed: int = 0) -> list[pathlib.Path]:
    """Reddish images with a yellow disc or yellow stripes: far from grey on purpose, so a
    generator that learns at all moves its mean colour away from its initial ~0."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    paths = []
    for i in range(n):
        image = np.empty((size, size, 3), np.uint8)
        image[...] = BACKGROUND
        if i % 2:
            period = int(rng.integers(4, 9))
            image[((xx + int(rng.integers(0, period))) // (period // 2)) % 2 == 0] = FOREGROUND
        else:
            cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < int(rng.integers(4, 10)) ** 2] = FOREGROUND
        path = folder / f"blob{i:03d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def write_class_folders(root: pathlib.Path, colours: dict[str, tuple[int, int, int]],
                        n: int = 8, size: int = 16) -> list[tuple[pathlib.Path, str]]:
    """One subfolder per class of noisy flat-colour images; returns (path, class) pairs."""
    rng = np.random.default_rng(1)
    items = []
    for name, colour in colours.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            noise = rng.integers(-20, 21, (size, size, 3))
            image = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            path = root / name / f"{i:03d}.png"
            Image.fromarray(image).save(path)
            items.append((path, name))
    return items
