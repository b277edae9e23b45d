"""The detector kinds as data: name, where the class lives, what it does and its defaults.

``DETECTOR_KINDS`` lists the built-in kinds without importing them, so listing kinds (or
scanning with a spectral bundle) never pays for torch and timm; a kind's class is imported
on first use (``detector_class``). Each entry's ``defaults`` are its constructor's, written
out as data for ``forensics detector list``; a test holds them equal to the signature.
Kinds defined elsewhere (plug-ins, tests) join with ``@register_detector("name")``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from forensics.detectors.base import Detector

__all__ = ["DETECTOR_KINDS", "DetectorKind", "constructor_defaults", "create_detector",
           "detector_class", "list_detectors", "register_detector"]

D = TypeVar("D", bound="Detector")


@dataclass(frozen=True)
class DetectorKind:
    """One detector kind: its name, class ("module:Class"), one-line description, defaults,
    and what a default of None means where it is not "none" (``notes``)."""

    name: str
    class_path: str
    description: str
    defaults: Mapping[str, Any]
    notes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists when dumped)."""
        return {"kind": self.name, "class": self.class_path, "description": self.description,
                "defaults": dict(self.defaults), "notes": dict(self.notes)}


def _kind(name: str, class_path: str, description: str, notes: Mapping[str, str] | None = None,
          **defaults: Any) -> DetectorKind:
    return DetectorKind(name, class_path, description, MappingProxyType(defaults),
                        MappingProxyType(dict(notes or {})))


DETECTOR_KINDS: dict[str, DetectorKind] = {kind.name: kind for kind in (
    _kind("spectral", "forensics.detectors.spectral:SpectralDetector",
          "a classifier (logreg, svm, gbm) on frequency-spectrum features, Platt-calibrated",
          features="fft", classifier="logreg", n_bins=64, window=True, channels="grey",
          tile=32, classifier_params=None, calibration="platt", seed=0,
          notes={"classifier_params": "None: the classifier's own defaults"}),
    _kind("cnn", "forensics.detectors.cnn:CNNDetector",
          "a fine-tuned CNN (timm backbone, or the small NPR-residual network) scoring whole "
          "images or their tiles",
          backbone="tf_efficientnet_lite0", pretrained=True, weights=None, input="rgb",
          crop_size=64, tile_size=256, pool="mean", pool_k=3, epochs=15, steps_per_epoch=None,
          batch_size=32, lr=1e-3, weight_decay=1e-2, patience=3, p_blur=None,
          blur_sigma=(0.0, 3.0), p_jpeg=None, jpeg_quality=(30, 100), flip=True, rot90=None,
          val_fraction=0.2, device="auto", threads=None, seed=0, progress=True,
          train_state_dir=None,
          notes={"pretrained": "False for backbones without ImageNet weights (npr_resnet)",
                 "p_blur": "None: 0.5 for input rgb, 0 for npr",
                 "p_jpeg": "None: 0.5 for input rgb, 0 for npr",
                 "rot90": "None: off for input rgb, on for npr",
                 "steps_per_epoch": "None: one pass over the training images",
                 "threads": "None: torch's setting",
                 "train_state_dir": "None: no state kept, no resume"}),
    _kind("ensemble", "forensics.detectors.ensemble:EnsembleDetector",
          "a logistic regression stacked on member detectors' scores, fit on validation",
          members=("spectral:fft", "spectral:npr"), C=1.0, train_state_dir=None,
          notes={"train_state_dir": "None: no state kept, no resume"}),
    _kind("oneclass", "forensics.detectors.oneclass:OneClassDetector",
          "a Gaussian mixture of real images' self-descriptions: unusual images score as fake; "
          "trains on reals alone",
          features="selfdesc", scales=3, n_components=2, covariance="full", reg_covar=0.1,
          holdout=0.2, false_alarm_rate=0.05, seed=0),
)}

# Classes imported or registered so far, by kind.
_CLASSES: dict[str, type[Detector]] = {}


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def constructor_defaults(cls: type) -> dict[str, Any]:
    """The default of every constructor parameter of ``cls`` (all must have one)."""
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {name: parameter.default
            for name, parameter in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and parameter.kind in named}


def register_detector(kind: str):
    """Class decorator that registers a Detector subclass under ``kind`` and sets ``cls.kind``.

    A built-in kind must be the class ``DETECTOR_KINDS`` names; any other kind is added to
    it, described by its docstring's first line, with its constructor's defaults.
    """
    def decorate(cls: type[D]) -> type[D]:
        from forensics.detectors.base import Detector

        if not (isinstance(cls, type) and issubclass(cls, Detector)):
            raise TypeError(f"register_detector({kind!r}) expects a Detector subclass, got {cls!r}")
        if kind in _CLASSES and _CLASSES[kind] is not cls:
            raise ValueError(f"detector kind {kind!r} is already registered by {_CLASSES[kind]!r}")
        entry = DETECTOR_KINDS.get(kind)
        if entry is None:
            summary = (inspect.getdoc(cls) or kind).splitlines()[0]
            DETECTOR_KINDS[kind] = _kind(kind, _class_path(cls), summary,
                                         **constructor_defaults(cls))
        elif entry.class_path != _class_path(cls):
            raise ValueError(f"detector kind {kind!r} is {entry.class_path}, not "
                             f"{_class_path(cls)}")
        cls.kind = kind
        _CLASSES[kind] = cls
        return cls

    return decorate


def list_detectors() -> list[str]:
    """Every detector kind, sorted (imports none of them)."""
    return sorted(DETECTOR_KINDS)


def detector_class(kind: str) -> type[Detector]:
    """The class of detector ``kind``, importing its module on first use; ValueError if none."""
    if kind not in _CLASSES:
        entry = DETECTOR_KINDS.get(kind) if isinstance(kind, str) else None
        if entry is None:
            raise ValueError(f"unknown detector kind {kind!r}; known kinds: "
                             f"{', '.join(list_detectors())}")
        module, _, name = entry.class_path.partition(":")
        importlib.import_module(module)  # its @register_detector fills _CLASSES
        if _CLASSES.get(kind) is not getattr(importlib.import_module(module), name):
            raise RuntimeError(f"{entry.class_path} does not register detector kind {kind!r}")
    return _CLASSES[kind]


def create_detector(kind: str, **params: Any) -> Detector:
    """A new, unfitted detector of ``kind`` built with constructor ``params``."""
    return detector_class(kind)(**params)
