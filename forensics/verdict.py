"""The verdict policy that `forensics scan` and the app share: fake, real, uncertain or unsure.

The call is P(fake) against the detector's threshold, with two guards against false
confidence:

* **uncertain**: P(fake) lies within ``band`` of the threshold, too close to call;
* **unsure**: the call flips when the image is re-saved as JPEG 90 or downscaled by 0.75 (what
  a website does to an upload), so it rests on traces that ordinary handling wipes out.

Otherwise the verdict is **fake** or **real**. The functions take anything carrying scores
(:class:`Scored`): the :class:`Scores` that :func:`score_images` returns, a scan row or an app
result. Nothing here imports streamlit, torch or OpenCV at import time, so the CLI starts and the
app's first page draws before any of them is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

__all__ = ["FAKE", "REAL", "UNCERTAIN", "UNSURE", "VERDICTS", "DEFAULT_BAND", "MAX_BAND",
           "StabilityCopy", "STABILITY_COPIES", "Scored", "Scores", "score_images", "is_fake",
           "in_uncertain_band", "flipped_copies", "members_agree", "verdict", "verdict_sentence"]

if TYPE_CHECKING:  # only types: the CLI and the app's first page import this module cheaply
    import numpy as np

    from forensics.detectors.base import Detector

FAKE, REAL, UNCERTAIN, UNSURE = "fake", "real", "uncertain", "unsure"
VERDICTS = (FAKE, REAL, UNCERTAIN, UNSURE)
DEFAULT_BAND = 0.15
MAX_BAND = 0.5


@dataclass(frozen=True)
class StabilityCopy:
    """A degraded copy the stability check re-scores: its label (as the app shows it), the
    scan column holding its P(fake), and the ``forensics.perturb`` id of how it is made (the
    robustness report's name for the same setting)."""

    label: str
    column: str
    perturbation: str

    def make(self, image: np.ndarray) -> np.ndarray:
        """The copy of an RGB uint8 image; one that equals the image (a flat one) is valid."""
        from forensics.perturb import apply, parse_perturbation  # cv2, scipy: when scoring only

        setting = parse_perturbation(self.perturbation)
        return apply(image, setting.name, setting.level, check=False, **setting.params)


# What a re-save or a resize by a website does.
STABILITY_COPIES = (
    StabilityCopy("JPEG 90", "p_fake_jpeg90", "jpeg_pil/q=90"),
    StabilityCopy("downscale 0.75", "p_fake_downscale0.75", "resize/scale=0.75,interpolation=area"),
)


class Scored(Protocol):
    """Scores of one image: P(fake) (None when it could not be scored), P(fake) of each
    stability copy by label (empty when not checked) and of each ensemble member by name."""

    @property
    def p_fake(self) -> float | None: ...

    @property
    def copies(self) -> Mapping[str, float]: ...

    @property
    def members(self) -> Mapping[str, float]: ...


@dataclass(frozen=True)
class Scores:
    """What :func:`score_images` returns for one image (a :class:`Scored`)."""

    p_fake: float
    copies: dict[str, float] = field(default_factory=dict)
    members: dict[str, float] = field(default_factory=dict)


def score_images(detector: Detector, images: Sequence[np.ndarray], *,
                 stability: bool = True) -> list[Scores]:
    """Scores of each image and, with ``stability``, of its STABILITY_COPIES, in one call of
    the detector (three times the work of scoring the images alone)."""
    if not images:
        return []
    copies = STABILITY_COPIES if stability else ()
    batch = [variant for image in images for variant in (image, *(c.make(image) for c in copies))]
    p_fake, members = detector.predict_proba_with_members(batch)
    step = 1 + len(copies)
    return [Scores(p_fake=float(p_fake[at]),
                   copies={c.label: float(p_fake[at + 1 + k]) for k, c in enumerate(copies)},
                   members={name: float(m[at]) for name, m in members.items()})
            for at in range(0, len(batch), step)]


def is_fake(p_fake: float, threshold: float) -> bool:
    """The detector's call: P(fake) at or above the threshold."""
    return p_fake >= threshold


def in_uncertain_band(p_fake: float, threshold: float, band: float) -> bool:
    """Whether P(fake) lies strictly within ``band`` of the threshold (too close to call)."""
    return abs(p_fake - threshold) < band


def flipped_copies(scores: Scored, threshold: float) -> list[str]:
    """Labels of the stability copies whose call differs from the image's."""
    original = is_fake(scores.p_fake, threshold)
    return [label for label, p in scores.copies.items() if is_fake(p, threshold) != original]


def members_agree(scores: Scored, threshold: float) -> bool | None:
    """Whether all ensemble members make the same call at ``threshold``; None without members."""
    if not scores.members:
        return None
    return len({is_fake(p, threshold) for p in scores.members.values()}) == 1


def verdict(scores: Scored, threshold: float, band: float) -> str:
    """UNCERTAIN inside the band, UNSURE when a stability copy flips the call, else FAKE or
    REAL; "" for an image that could not be scored. ``band`` 0 and no copies: the plain call."""
    if scores.p_fake is None:
        return ""
    if in_uncertain_band(scores.p_fake, threshold, band):
        return UNCERTAIN
    if flipped_copies(scores, threshold):
        return UNSURE
    return FAKE if is_fake(scores.p_fake, threshold) else REAL


def verdict_sentence(scores: Scored, threshold: float, band: float) -> str:
    """The verdict explained in one line; "" for an image that could not be scored."""
    call = verdict(scores, threshold, band)
    p = scores.p_fake
    if not call:
        return ""
    if call == UNCERTAIN:
        return (f"P(fake) {p:.2f} is within ±{band:.2f} of the threshold {threshold:.2f}: "
                "too close to call.")
    if call == UNSURE:
        flips = ", ".join(flipped_copies(scores, threshold))
        side = FAKE if is_fake(p, threshold) else REAL
        return f"Looks {side} (P(fake) {p:.2f}), but the call flips after {flips}: unsure."
    side = "above" if call == FAKE else "below"
    checked = (f" and stays there after {' and '.join(scores.copies)}" if scores.copies
               else "")
    return f"P(fake) {p:.2f} is {side} the threshold {threshold:.2f}{checked}."
