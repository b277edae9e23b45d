"""One factory over a registry of GAN families.

A family registers a builder with its default config, and the values it supports of keys that
take a choice (its training step applies them), as plain data::

    @register_generator("stylegan", {"resolution": 32, "loss": "nonsaturating", ...},
                        choices={"loss": ("nonsaturating", "hinge", "lsgan")})
    def build_stylegan(config: dict) -> tuple[nn.Module, nn.Module]:
        ...

and everything else goes through ``create_generator("dcgan", resolution=32)``, which merges
the overrides into the defaults, refuses keys and values the family does not support (one
message naming the family, the option and what it supports) and returns a :class:`GanPair`.
``list_generators()`` shows what exists and the defaults of each; ``get_family(name)`` also
tells which training step and which kind of data the family needs, how its training images are
cut (``crop``) and under which generator name its samples go (``generator_label``; see
``generators.trainer`` for the step contract).
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from torch import nn

from .losses import LOSSES

Nets = "tuple[nn.Module, nn.Module] | Mapping[str, nn.Module]"
Builder = Callable[[dict], Nets]

# Modules whose import registers the built-in families (imported on first use, which keeps
# nets -> registry a one-way import). A module that does not exist yet is skipped.
_BUILTIN_MODULES = ("generators.nets.dcgan", "generators.nets.stylegan",
                    "generators.nets.cyclegan", "generators.nets.autoencoder",
                    "generators.nets.pix2pix", "generators.nets.progan",
                    "generators.nets.biggan", "generators.nets.ddpm")

# What a batch of each kind of training data holds (see generators.data.BatchStream).
DATASET_KINDS = {
    "images": "unlabelled real images: a batch is an image tensor (N, 3, R, R) in [-1, 1]",
    "labelled": "images with classes (corpus subfolders or a manifest field): a batch is "
                "(images, class indices (N,) int64)",
    "paired": "two unaligned image folders A (--data) and B (--data-b): a batch is "
              "(images_A, images_B)",
    "aligned": "input/target pairs aligned pixel for pixel (side-by-side A|B files, or inputs "
               "computed from photos; generators.data_aligned): a batch is (inputs, targets)",
}

# How training images become (R, R) inputs, R the config's resolution (see generators.data).
CROP_MODES = {
    "resize": "the shorter side resized to R, then a centre crop",
    "random": "random R x R crops at native resolution (images never resized)",
}


@dataclass(frozen=True)
class GeneratorFamily:
    """A registered GAN family: how to build it, its defaults, the values it supports of keys
    that take a choice, its step, its data and how it names its samples."""

    name: str
    builder: Builder
    default_config: dict
    choices: dict[str, tuple]
    step_class: type | None  # None: generators.steps.AdversarialStep
    dataset: str
    crop: str = "resize"
    label: Callable[[dict], str] | None = None  # None: the family's name

    def generator_label(self, config: dict) -> str:
        """The generator name of this family's samples under ``config`` (the manifest's
        ``generator``), so configs that make different fakes are told apart in evaluation."""
        return self.name if self.label is None else self.label(config)

    def resolve_step_class(self) -> type:
        if self.step_class is not None:
            return self.step_class
        from .steps import AdversarialStep  # steps imports registry: resolve lazily

        return AdversarialStep


_REGISTRY: dict[str, GeneratorFamily] = {}


class GanPair(nn.Module):
    """The networks of one family, built from ``config`` by the family ``name``.

    Each net is a named child module: ``generator`` and ``discriminator`` for builders that
    return a pair (``generator`` maps latents (N, z_dim) to images (N, 3, R, R) in [-1, 1];
    ``discriminator`` maps images to logits (N,)), or the keys of the mapping a builder returns
    (e.g. ``G_A``, ``G_B``, ``D_A``, ``D_B``). ``net_names`` lists them in order.
    ``generator_ema`` is an optional EMA copy of the generator (set by ``load_checkpoint``
    when the checkpoint holds one); :meth:`sample_model` prefers it.
    """

    def __init__(self, name: str, nets: Mapping[str, nn.Module], config: dict,
                 dataset: str = "images"):
        super().__init__()
        self.name = name
        self.config = config
        self.dataset = dataset
        self.net_names = tuple(nets)
        for net_name, module in nets.items():
            self.add_module(net_name, module)
        self.generator_ema: nn.Module | None = None

    @property
    def nets(self) -> dict[str, nn.Module]:
        """Net name -> module (the EMA copy excluded)."""
        return {name: getattr(self, name) for name in self.net_names}

    def sample_model(self) -> nn.Module:
        """The module to draw images from: the EMA generator when present, else ``generator``."""
        if self.generator_ema is not None:
            return self.generator_ema
        if "generator" not in self.net_names:
            raise ValueError(f"generator family {self.name!r} has no net named 'generator' "
                             f"(it has {list(self.net_names)})")
        return self.generator

    def extra_repr(self) -> str:
        return f"name={self.name!r}, config={self.config}"


def register_generator(name: str, default_config: dict, *, step_class: type | None = None,
                       dataset: str = "images",
                       choices: Mapping[str, Sequence[Any]] | None = None,
                       crop: str = "resize", label: Callable[[dict], str] | None = None
                       ) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(config)`` under ``name``.

    The builder returns ``(generator, discriminator)`` or a mapping ``{net name: module}``.
    ``default_config`` lists every key the family accepts (architecture and hyperparameters,
    JSON-friendly values); ``choices`` the values a key may take where only some are
    supported: a ``"loss"`` key must list the entries of ``losses.LOSSES`` that the family's
    step applies (wgan-gp only where it adds the gradient penalty). ``step_class`` is the
    training step (default ``generators.steps.AdversarialStep``; contract in
    ``generators.trainer``); ``dataset`` is one of :data:`DATASET_KINDS`; ``crop`` one of
    :data:`CROP_MODES` ("random" for ``"images"`` only); ``label(config)`` names the
    generator of its samples when the config makes a different generator (default: ``name``).
    """
    if dataset not in DATASET_KINDS:
        raise ValueError(f"dataset must be one of {sorted(DATASET_KINDS)}, got {dataset!r}")
    if crop not in CROP_MODES or (crop != "resize" and dataset != "images"):
        raise ValueError(f"crop must be one of {sorted(CROP_MODES)} ('random' for 'images' "
                         f"data only), got {crop!r} for {dataset!r} data")
    allowed = {key: tuple(values) for key, values in (choices or {}).items()}
    if "loss" in default_config and "loss" not in allowed:
        raise ValueError(f"{name!r} has a loss key: declare the losses its step applies "
                         "(choices={'loss': (...)})")
    for key, values in allowed.items():
        if key not in default_config or default_config[key] not in values:
            raise ValueError(f"choices of {name!r}: {key!r} must be a config key whose default "
                             f"is one of {list(values)}")
    if not set(allowed.get("loss", ())) <= set(LOSSES):
        raise ValueError(f"choices of {name!r}: losses must be among {sorted(LOSSES)}")

    def decorator(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"a generator named {name!r} is already registered")
        _REGISTRY[name] = GeneratorFamily(name, builder,
                                          _normalise(copy.deepcopy(default_config)), allowed,
                                          step_class, dataset, crop, label)
        return builder

    return decorator


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a module that exists but fails to import is a bug
                raise


def get_family(name: str) -> GeneratorFamily:
    """The registered family ``name``; ValueError listing the registered ones if unknown."""
    _load_builtins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown generator {name!r}; registered: {sorted(_REGISTRY)} "
                         "(`forensics zoo list` describes them)")
    return _REGISTRY[name]


def list_generators() -> dict[str, dict]:
    """Name -> a copy of that family's default config."""
    _load_builtins()
    return {name: copy.deepcopy(entry.default_config) for name, entry in sorted(_REGISTRY.items())}


def resolve_config(name: str, **overrides: Any) -> dict:
    """The family's defaults updated by ``overrides``; ValueError for a key or a value the
    family does not support (its step would silently ignore it).

    JSON arrays in the overrides are read as tuples, so a config read back from
    ``config.json`` equals the one saved.
    """
    family = get_family(name)
    unknown = sorted(set(overrides) - set(family.default_config))
    if unknown:
        elsewhere = sorted(other.name for other in _REGISTRY.values()
                           if set(unknown) & set(other.default_config))
        raise _unsupported(name, f"config key(s) {unknown}"
                           + (f" (options of {', '.join(elsewhere)})" if elsewhere else ""),
                           f"valid keys: {sorted(family.default_config)}")
    config = {**copy.deepcopy(family.default_config), **_normalise(copy.deepcopy(overrides))}
    for key, values in family.choices.items():
        if config[key] not in values:
            raise _unsupported(name, f"{key}={config[key]!r}",
                               f"it supports {key} in {sorted(values)}")
    return config


def _unsupported(name: str, what: str, supported: str) -> ValueError:
    """The one message for a config the family ``name`` does not support."""
    return ValueError(f"generator {name!r} does not support {what}; {supported} "
                      "(`forensics zoo list` shows each family's options)")


def create_generator(name: str, **overrides: Any) -> GanPair:
    """Build the family ``name`` with its defaults updated by ``overrides``.

    Raises ValueError for an unknown family, an unknown config key (the message lists the valid
    keys) or an invalid value (from the family's builder).
    """
    family = get_family(name)
    config = resolve_config(name, **overrides)
    nets = family.builder(config)
    if not isinstance(nets, Mapping):
        generator, discriminator = nets
        nets = {"generator": generator, "discriminator": discriminator}
    return GanPair(name, nets, config, family.dataset)


def _normalise(config: dict) -> dict:
    return {key: tuple(value) if isinstance(value, list) else value
            for key, value in config.items()}
