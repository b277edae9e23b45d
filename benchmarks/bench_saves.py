"""What replacing a model folder as one unit costs: a checkpoint save, staged vs file by file.

Usage: python benchmarks/bench_saves.py [--model dcgan|stylegan] [--resolution 64]
       [--rounds 7] [--out DIR]
Prints one JSON object. Both ways write the same bytes (weights, optimiser state, config.json)
over an existing checkpoint, with fsync and SHA-256s in config.json: ``staged`` is
``save_checkpoint`` (files staged in ``.pending/``, a commit marker, renames into place,
crash-safe as a unit); ``per_file`` is the obvious baseline and this project's previous save,
each file written atomically in place one after the other (a crash between files leaves a
mix). Rounds alternate between the two; figures are medians in milliseconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save

from crashsafe.files import atomic_write_bytes, atomic_write_text
from crashsafe.tensors import encode_state
from generators.checkpoint import CONFIG_FILE, OPTIM_FILE, WEIGHTS_FILE, save_checkpoint
from generators.registry import create_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dcgan")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", help="folder to write in (default: a temporary one)")
    args = parser.parse_args()

    torch.manual_seed(0)
    pair = create_generator(args.model, resolution=args.resolution)
    optimiser = torch.optim.Adam(pair.generator.parameters())
    pair.generator(torch.randn(2, pair.generator.z_dim)).mean().backward()
    optimiser.step()
    state = {"optimizers": {"G": optimiser.state_dict()}}

    def staged(folder: Path) -> None:
        save_checkpoint(folder, pair, 1, {}, train_state=state)

    def per_file(folder: Path) -> None:
        tensors = {f"{name}.{key}": value.detach().contiguous()
                   for name, net in pair.nets.items() for key, value in net.state_dict().items()}
        state_tensors, skeleton = encode_state(state)
        files = {WEIGHTS_FILE: save(tensors),
                 OPTIM_FILE: save(state_tensors, metadata={"skeleton": json.dumps(skeleton)})}
        for filename, data in files.items():
            atomic_write_bytes(folder / filename, data)
        hashes = {filename: hashlib.sha256(data).hexdigest() for filename, data in files.items()}
        atomic_write_text(folder / CONFIG_FILE, json.dumps({"step": 1, "files": hashes}) + "\n")

    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        times: dict[str, list[float]] = {"staged": [], "per_file": []}
        ways = {"staged": staged, "per_file": per_file}
        for name, way in ways.items():  # warm-up, and an existing checkpoint to replace
            way(Path(tmp) / name)
        for _ in range(args.rounds):
            for name, way in ways.items():
                start = time.perf_counter()
                way(Path(tmp) / name)
                times[name].append(1000 * (time.perf_counter() - start))
        size = sum(p.stat().st_size for p in (Path(tmp) / "staged").iterdir() if p.is_file())
    medians = {name: round(statistics.median(values), 2) for name, values in times.items()}
    print(json.dumps({
        "model": args.model, "resolution": args.resolution, "checkpoint_mb": round(size / 2**20, 2),
        "rounds": args.rounds, "median_ms": medians,
        "staged_over_per_file": round(medians["staged"] / medians["per_file"], 3),
        "machine": platform.machine(), "torch": torch.__version__,
    }, indent=2))


if __name__ == "__main__":
    main()
