"""Model cards: what a bundle was trained on, how it decides, how it scored, where it fails."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from forensics.detectors.base import read_bundle_config
from forensics.detectors.registry import DETECTOR_KINDS, detector_class

__all__ = ["model_card", "format_model_card"]

_CARD_KEYS = ("kind", "params", "threshold", "calibration", "preprocessing", "training",
              "validation", "created", "library_version")
_METRICS = (("ap", "AP"), ("roc_auc", "ROC-AUC"), ("eer", "EER"), ("accuracy", "accuracy"),
            ("real_accuracy", "real acc."), ("fake_accuracy", "fake acc."), ("ece", "ECE"))


def model_card(folder: str | os.PathLike) -> dict[str, Any]:
    """The card of a bundle folder as JSON-ready data (call ``load_detector`` first to validate).

    Failure modes come from the bundle, or from the kind when an older bundle has none;
    an ensemble's card lists its members' cards under ``members``.
    """
    folder = Path(folder)
    manifest = read_bundle_config(folder)
    card: dict[str, Any] = {"bundle": str(folder), **{k: manifest.get(k) for k in _CARD_KEYS}}
    kind_modes = (detector_class(manifest["kind"]).known_failure_modes
                  if manifest["kind"] in DETECTOR_KINDS else ())
    card["known_failure_modes"] = manifest.get("known_failure_modes") or list(kind_modes)
    members = (manifest.get("params") or {}).get("members")
    if manifest["kind"] == "ensemble" and isinstance(members, list):
        card["members"] = {m["name"]: model_card(folder / "members" / m["name"]) for m in members}
    return card


def _metrics_line(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "none (trained without a validation split)"
    parts = [f"{label} {metrics[key]:.3f}" for key, label in _METRICS
             if isinstance(metrics.get(key), (int, float))]
    return f"{metrics.get('n', '?')} images: " + ", ".join(parts)


def _calibration_line(calibration: Any) -> str:
    if not calibration:
        return "none: scores are the model's own probabilities"
    if isinstance(calibration, dict):
        method = calibration.get("method", "?")
        numbers = ", ".join(f"{k} {v:.4g}" for k, v in {**calibration.get("weights", {}),
                                                        **calibration}.items()
                            if isinstance(v, float))
        fit_on = calibration.get("n_val")
        note = calibration.get("note")
        return f"{method}" + (f" ({numbers})" if numbers else "") + (
            f", fit on {fit_on} held-out images" if fit_on else "") + (
            f"; {note}" if isinstance(note, str) else "")
    return str(calibration)


def _threshold_origin(validation: dict[str, Any] | None) -> str:
    """How ``Detector.fit`` chose the threshold: on validation with both classes, else 0.5."""
    if validation and validation.get("roc_auc") is not None:
        return "chosen on validation for the best balanced accuracy"
    return "0.5: no validation data with both real and fake images to choose it on"


def _recipe_lines(recipe: dict[str, Any] | None) -> list[str]:
    """What a recipe-built bundle (``--recipe general``) was made from: every source file with
    its SHA-256 and split, and each simulator's checkpoint."""
    if not recipe:
        return []
    minutes = recipe.get("minutes") or {}
    lines = [f"  recipe {recipe.get('name')}: built in {sum(minutes.values()):.1f} min; sources "
             "(nothing else was read to train, calibrate or threshold it):"]
    lines += [f"    {s['split']:5s} {s['name']}  {s['file']}  sha256 {s['sha256'][:16]}..."
              for s in recipe.get("sources") or []]
    lines += [f"    simulator {name}  checkpoint sha256 {sha[:16]}..."
              for name, sha in (recipe.get("simulators") or {}).items()]
    return lines


def format_model_card(card: dict[str, Any], indent: str = "") -> str:
    """The card as readable text."""
    training = card.get("training") or {}
    params = card.get("params") or {}
    recipe = ", ".join(f"{k}={v}" for k, v in params.items() if k != "members")
    counts = training.get("counts") or {}
    lines = [
        f"{card['kind']} detector  {card['bundle']}",
        f"  created {card.get('created')} with gan-forensics {card.get('library_version')}",
        f"  parameters: {recipe or '-'}",
        f"  trained on {training.get('n_images', '?')} images ({training.get('n_real', '?')} real, "
        f"{training.get('n_fake', '?')} fake), validated on {training.get('n_val_images', 0)}",
    ]
    for corpus in training.get("corpora") or []:
        lines.append(f"    corpus {corpus}")
    if training.get("generators"):
        lines.append(f"    generators: {', '.join(training['generators'])}")
    if counts:
        lines.append("    counts: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    lines += _recipe_lines(training.get("recipe"))
    lines += [
        f"  threshold: {card['threshold']:.4f} (P(fake) >= it is called fake; "
        f"{_threshold_origin(card.get('validation'))})",
        f"  calibration: {_calibration_line(card.get('calibration'))}",
        f"  validation: {_metrics_line(card.get('validation'))}",
        "  known failure modes:",
        *[f"    - {mode}" for mode in card.get("known_failure_modes") or ["none recorded"]],
    ]
    for name, member in (card.get("members") or {}).items():
        lines += [f"  member {name}:", format_model_card(member, "    ")]
    return "\n".join(indent + line for line in "\n".join(lines).splitlines())
