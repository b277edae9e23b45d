"""One factory over a registry of GAN families.

A family registers a builder with its default config as plain data::

    @register_generator("dcgan", {"resolution": 64, "nz": 100, ...})
    def build_dcgan(config: dict) -> tuple[nn.Module, nn.Module]:
        ...

and everything else goes through ``create_generator("dcgan", resolution=32)``, which merges
the overrides into the defaults, rejects unknown keys and returns a :class:`GanPair`.
``list_generators()`` shows what exists and the defaults of each.
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from .losses import LOSSES

Builder = Callable[[dict], "tuple[nn.Module, nn.Module]"]

# Modules whose import registers the built-in families (imported on first use, which keeps
# nets -> registry a one-way import).
_BUILTIN_MODULES = ("generators.nets.dcgan",)


@dataclass(frozen=True)
class _Entry:
    builder: Builder
    default_config: dict


_REGISTRY: dict[str, _Entry] = {}


class GanPair(nn.Module):
    """A generator and its discriminator, built from ``config`` by the family ``name``.

    ``generator`` maps latents (N, z_dim) to images (N, 3, R, R) in [-1, 1];
    ``discriminator`` maps such images to logits (N,).
    """

    def __init__(self, name: str, generator: nn.Module, discriminator: nn.Module, config: dict):
        super().__init__()
        self.name = name
        self.generator = generator
        self.discriminator = discriminator
        self.config = config

    def extra_repr(self) -> str:
        return f"name={self.name!r}, config={self.config}"


def register_generator(name: str, default_config: dict) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(config) -> (generator, discriminator)`` under ``name``.

    ``default_config`` lists every key the family accepts (architecture and hyperparameters,
    JSON-friendly values); it must include ``"loss"`` naming an entry of ``losses.LOSSES``.
    """

    def decorator(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"a generator named {name!r} is already registered")
        _REGISTRY[name] = _Entry(builder, _normalise(copy.deepcopy(default_config)))
        return builder

    return decorator


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def list_generators() -> dict[str, dict]:
    """Name -> a copy of that family's default config."""
    _load_builtins()
    return {name: copy.deepcopy(entry.default_config) for name, entry in sorted(_REGISTRY.items())}


def create_generator(name: str, **overrides: Any) -> GanPair:
    """Build the family ``name`` with its defaults updated by ``overrides``.

    Raises ValueError for an unknown family, an unknown config key (the message lists the valid
    keys) or an invalid value (from the family's builder). JSON arrays in the overrides are
    read as tuples, so a config read back from ``config.json`` equals the one saved.
    """
    _load_builtins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown generator {name!r}; registered: {sorted(_REGISTRY)}")
    entry = _REGISTRY[name]
    unknown = sorted(set(overrides) - set(entry.default_config))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} for generator {name!r}; "
                         f"valid keys: {sorted(entry.default_config)}")
    config = {**copy.deepcopy(entry.default_config), **_normalise(copy.deepcopy(overrides))}
    if config.get("loss") not in LOSSES:
        raise ValueError(f"unknown loss {config.get('loss')!r} for generator {name!r}; "
                         f"choose one of {sorted(LOSSES)}")
    generator, discriminator = entry.builder(config)
    return GanPair(name, generator, discriminator, config)


def _normalise(config: dict) -> dict:
    return {key: tuple(value) if isinstance(value, list) else value
            for key, value in config.items()}
