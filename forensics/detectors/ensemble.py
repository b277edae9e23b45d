"""Ensemble detector: a logistic regression stacked on its members' scores, fit on validation.

Members are any registered detectors (spectral variants, the CNN, ...). They are trained on
the training split; the stacker then learns, on the validation split, how far to trust each
member: P(fake) = sigmoid(sum_m w_m * logit(p_m) + b). Fit by log loss on held-out data, this
is calibrated like Platt scaling, but across members.

The bundle folder holds each member as a complete bundle of its own under
``members/<name>/``, loaded through ``load_detector`` with every member check; member names are
plain names, so no path read from detector.json leaves the bundle folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit, logit

from forensics.detectors.base import BundleError, Detector
from forensics.detectors.registry import DETECTOR_KINDS, detector_class, register_detector

__all__ = ["EnsembleDetector", "MemberSpec", "parse_member_specs"]

MEMBERS_DIR = "members"
STACKER_FILE = "stacker.npz"
# Member scores are clipped away from 0 and 1 so that their logits stay finite.
_CLIP = 1e-6
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


@dataclass(frozen=True)
class MemberSpec:
    """One member: its folder name under members/, its detector kind and constructor params."""

    name: str
    kind: str
    params: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "params": self.params}


def _member_class(kind: object) -> type[Detector]:
    """The registered class of a member kind (any kind but an ensemble); ValueError if none."""
    if not isinstance(kind, str) or kind not in DETECTOR_KINDS or kind == "ensemble":
        known = sorted(set(DETECTOR_KINDS) - {"ensemble"})
        raise ValueError(f"member kind {kind!r} is not a registered detector kind: {known}")
    return detector_class(kind)


def _member_spec(item: object) -> MemberSpec:
    """A MemberSpec from "kind[:variant]" or {"name", "kind", "params"}; ValueError if invalid."""
    if isinstance(item, str):
        kind, _, variant = item.partition(":")
        params: dict[str, Any] = {}
        if variant:
            variant_param = _member_class(kind).variant_param
            if variant_param is None:
                raise ValueError(f"member {item!r}: kind {kind!r} takes no ':variant'")
            params[variant_param] = variant
        item = {"name": f"{kind}-{variant}" if variant else kind, "kind": kind, "params": params}
    if not isinstance(item, dict) or set(item) != {"name", "kind", "params"}:
        raise ValueError(f"a member is 'kind[:variant]' or a dict of name, kind and params; "
                         f"got {item!r}")
    name, kind, params = item["name"], item["kind"], item["params"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"member name {name!r} must be a plain name (letters, digits, _.+-)")
    _member_class(kind)
    if not isinstance(params, dict):
        raise ValueError(f"member {name!r}: params must be a dict, got {params!r}")
    return MemberSpec(name, kind, params)


def parse_member_specs(members: str | Sequence[object]) -> list[MemberSpec]:
    """Members from "spectral:fft,spectral:npr,cnn" or a list of strings and dicts.

    "kind:variant" sets the kind's variant parameter (``features`` for spectral) and names
    the member "kind-variant". Names must be unique.
    """
    items = members.split(",") if isinstance(members, str) else list(members)
    specs = [_member_spec(item.strip() if isinstance(item, str) else item) for item in items]
    names = [spec.name for spec in specs]
    if not specs or len(set(names)) != len(names):
        raise ValueError(f"an ensemble needs at least one member and unique names, got {names}")
    return specs


@register_detector("ensemble")
class EnsembleDetector(Detector):
    """Members' P(fake) -> logits -> logistic regression fit on validation -> P(fake).

    Parameters: ``members`` ("kind[:variant],..." or a list of those strings and
    {"name", "kind", "params"} dicts, see ``parse_member_specs``), ``C`` (the stacker's inverse
    regularisation) and ``train_state_dir`` (where members that resume keep their training
    state, each in ``members/<name>/`` of it; see ``Detector``).

    Learned: ``members_`` (name -> fitted Detector), ``coef_`` (one weight per member, float64)
    and ``intercept_``, plus the ``threshold_``, ``training_info_``, ``validation_metrics_``
    and ``calibration_`` (the stacker in words and numbers) of every Detector.
    """

    known_failure_modes = (
        "It inherits its members' failure modes; see each member's card with "
        "`forensics detector info BUNDLE/members/NAME`.",
        "The stacker is fit on the validation split; with few validation images its weights, "
        "and so its calibration, are noisy.",
        "When members disagree strongly (e.g. after resizing or JPEG) the stacked score can sit "
        "near the threshold; read the per-member scores that `forensics scan` writes.",
    )

    def __init__(self, members: str | Sequence[object] = ("spectral:fft", "spectral:npr"),
                 C: float = 1.0, train_state_dir: str | os.PathLike | None = None):
        self.members = members
        self.C = C
        self.train_state_dir = train_state_dir

    def resolved_params(self) -> dict[str, Any]:
        """The parameters a bundle records, members in their full form."""
        return {"members": [spec.as_dict() for spec in parse_member_specs(self.members)],
                "C": self.C}

    @property
    def scores_in_threads(self) -> bool:  # type: ignore[override]
        """Whether every member may score from several threads at once."""
        return all(m.scores_in_threads for m in getattr(self, "members_", {}).values())

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Each member's own preprocessing, by member name."""
        if hasattr(self, "members_"):
            return {"members": {name: m.preprocessing for name, m in self.members_.items()}}
        return {"members": {spec.name: spec.kind for spec in parse_member_specs(self.members)}}

    def _fit(
        self,
        images: Sequence[np.ndarray],
        labels: np.ndarray,
        validation: tuple[Sequence[np.ndarray], np.ndarray] | None,
    ) -> None:
        """Fit every member on train (each calibrated on val), then the stacker on val."""
        from sklearn.linear_model import LogisticRegression  # fitting only: scans skip it

        if validation is None or len(np.unique(validation[1])) < 2:
            raise ValueError("an ensemble fits its stacker on validation data: pass val_images "
                             "and val_labels with real and fake images (from the CLI: corpora "
                             "whose val split holds both)")
        val_images, val_labels = validation
        self.members_ = {}
        for spec in parse_member_specs(self.members):
            member = _member_class(spec.kind)(**spec.params)
            if self.train_state_dir is not None and member.resumes_training():
                # each member resumes from its own state
                member.set_params(train_state_dir=Path(self.train_state_dir) / MEMBERS_DIR
                                  / spec.name)
            self.members_[spec.name] = member.fit(images, labels, val_images=val_images,
                                                  val_labels=val_labels)
        features = self._logits(self._member_scores(val_images))
        stacker = LogisticRegression(C=self.C, max_iter=1000).fit(features, val_labels)
        self.coef_ = stacker.coef_[0].astype(np.float64)
        self.intercept_ = float(stacker.intercept_[0])
        self.calibration_ = {
            "method": "stacked logistic regression on member logits, fit on validation",
            "weights": dict(zip(self.members_, self.coef_.tolist())),
            "intercept": self.intercept_, "n_val": len(val_labels),
        }

    def resumes_training(self) -> bool:
        """Whether a member does (a CNN): each keeps its state in
        ``train_state_dir/members/<name>/``; the others simply fit again."""
        return any(_member_class(spec.kind)(**spec.params).resumes_training()
                   for spec in parse_member_specs(self.members))

    def _member_scores(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        return {name: member.predict_proba(images) for name, member in self.members_.items()}

    def _logits(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        """Member logits (N, M) in member order."""
        stacked = np.stack([scores[name] for name in self.members_], axis=1)
        return logit(np.clip(stacked, _CLIP, 1 - _CLIP))

    def _stack(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        return expit(self._logits(scores) @ self.coef_ + self.intercept_)

    def predict_member_scores(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Each member's P(fake), float64 (N,), by member name (members validate the images)."""
        self._check_fitted()
        return self._member_scores(images)

    def predict_proba_with_members(
        self, images: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The stacked P(fake) and the member scores it came from, each member run once."""
        scores = self.predict_member_scores(images)
        return self._stack(scores), scores

    def _predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self._stack(self._member_scores(images))

    def _arrays(self) -> dict[str, dict[str, np.ndarray]]:
        return {STACKER_FILE: {"coef": self.coef_, "intercept": np.asarray(self.intercept_)}}

    def _save_parts(self, folder: Path) -> None:
        """Each member as a complete bundle under members/<name>/."""
        for name, member in self.members_.items():
            member.save(folder / MEMBERS_DIR / name)

    def _restore(self, folder: Path, arrays: dict[str, dict[str, np.ndarray]]) -> None:
        """Load the members through load_detector and the stacker weights; check they agree."""
        from forensics.detectors import load_detector  # the registry module imports this one

        try:
            specs = parse_member_specs(self.members)
        except ValueError as error:
            raise BundleError(folder, f"'params' members: {error}") from None
        stacker = arrays.get(STACKER_FILE)
        if (stacker is None or set(stacker) != {"coef", "intercept"}
                or stacker["coef"].shape != (len(specs),) or stacker["intercept"].shape != ()
                or not np.isfinite(stacker["coef"]).all()):
            raise BundleError(folder, f"{STACKER_FILE} must hold 'coef' ({len(specs)},) and a "
                                      "scalar 'intercept'")
        root = folder.resolve()
        self.members_ = {}
        for spec in specs:
            path = folder / MEMBERS_DIR / spec.name
            # No symlinks either: a member folder must really lie inside this bundle.
            if path.resolve() != root / MEMBERS_DIR / spec.name:
                raise BundleError(folder, f"member folder {path} leaves the bundle folder")
            member = load_detector(path)
            if member.kind != spec.kind:
                raise BundleError(folder, f"member {spec.name!r} is a {member.kind!r} bundle, "
                                          f"detector.json says {spec.kind!r}")
            self.members_[spec.name] = member
        self.coef_ = stacker["coef"].astype(np.float64)
        self.intercept_ = float(stacker["intercept"])
