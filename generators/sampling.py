"""Sampling a trained generator into a fake corpus: seed-named PNGs plus ``manifest.jsonl``."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from tqdm.auto import tqdm

from .checkpoint import checkpoint_sha256, load_checkpoint, read_checkpoint_config
from .files import append_jsonl, read_jsonl
from .images import save_png, tensor_to_uint8
from .runtime import resolve_device

MANIFEST_FILE = "manifest.jsonl"


def seed_latents(seeds: Iterable[int], z_dim: int) -> torch.Tensor:
    """One standard-normal latent per seed, (N, z_dim) float32 on the CPU.

    Each row depends on its seed alone (its own ``torch.Generator``), so an image is named by
    its seed whatever the batch or order it is drawn in.
    """
    rows = [torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(rows) if rows else torch.empty(0, z_dim)


def image_name(seed: int) -> str:
    return f"seed{seed:06d}.png"


def sample_images(run_dir: str | Path, n: int, out_dir: str | Path, *, seed: int = 0,
                  batch_size: int = 64, device: str = "auto", progress: bool = True) -> list[dict]:
    """Write ``n`` images of the checkpoint in ``run_dir`` to ``out_dir``, seeds ``seed..seed+n-1``.

    Image ``seed{s:06d}.png`` comes from ``seed_latents([s])`` through the generator in eval
    mode; each new image gets one row in ``out_dir/manifest.jsonl``: ``path`` (relative to
    ``out_dir``), ``label`` ("fake"), ``generator``, ``checkpoint`` (``run_dir`` as given),
    ``checkpoint_sha256``, ``seed`` and ``resolution``. Seeds whose row and PNG already exist are
    skipped, so rerunning after an interruption resumes without duplicating rows. Returns the
    rows of all ``n`` seeds, in seed order. Raises ValueError if ``out_dir`` already holds one of
    these seeds from another checkpoint.
    """
    if n < 0 or batch_size < 1:
        raise ValueError(f"need n >= 0 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / MANIFEST_FILE
    read_checkpoint_config(run_dir)  # a clear error for a folder that is no checkpoint
    sha256 = checkpoint_sha256(run_dir)
    seeds = list(range(seed, seed + n))

    rows_by_seed = {row["seed"]: row for row in read_jsonl(manifest, repair=True)}
    clashes = [s for s in seeds
               if s in rows_by_seed and rows_by_seed[s].get("checkpoint_sha256") != sha256]
    if clashes:
        raise ValueError(f"{manifest} already lists seed {clashes[0]} from another checkpoint "
                         f"({rows_by_seed[clashes[0]].get('checkpoint')}); "
                         "sample each checkpoint into its own folder")
    todo = [s for s in seeds if not (s in rows_by_seed and (out_dir / image_name(s)).exists())]

    if todo:
        torch_device = resolve_device(device)
        pair, document = load_checkpoint(run_dir, device=torch_device)
        generator = pair.generator.eval()
        with tqdm(total=len(todo), desc=f"sample {document['name']}", unit="img",
                  disable=not progress) as bar:
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                with torch.inference_mode():
                    images = generator(seed_latents(batch, generator.z_dim).to(torch_device))
                new_rows = []
                for s, image in zip(batch, tensor_to_uint8(images)):
                    save_png(out_dir / image_name(s), image)
                    if s not in rows_by_seed:
                        rows_by_seed[s] = {
                            "path": image_name(s), "label": "fake", "generator": document["name"],
                            "checkpoint": str(run_dir), "checkpoint_sha256": sha256, "seed": s,
                            "resolution": document["config"]["resolution"],
                        }
                        new_rows.append(rows_by_seed[s])
                # Rows follow their PNGs, so a listed image always exists in full.
                append_jsonl(manifest, new_rows)
                bar.update(len(batch))
    return [rows_by_seed[s] for s in seeds]
