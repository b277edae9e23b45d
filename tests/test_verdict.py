"""The verdict policy (forensics/verdict.py) that `forensics scan` and the app share."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from forensics import cli
from forensics import verdict as V
from forensics.perturb import jpeg, resize


class BrightnessDetector:
    """A stand-in detector: P(fake) is the mean pixel value / 255; it records its batches."""

    def __init__(self):
        self.batches = []

    def predict_proba_with_members(self, images):
        self.batches.append([image.shape for image in images])
        p = np.array([image.mean() / 255 for image in images])
        return p, {"bright": p, "dark": 1 - p}


def scores(p: float, copies: dict[str, float] | None = None,
           members: dict[str, float] | None = None) -> V.Scores:
    """Scores of P(fake) ``p``; each stability copy scores ``p`` too unless ``copies`` says."""
    return V.Scores(p, {c.label: p for c in V.STABILITY_COPIES} | (copies or {}), members or {})


def test_band_edges_around_the_threshold():
    # 0.25 and 0.75 are exact in binary: the band's edges themselves are outside it.
    assert V.verdict(scores(0.75), 0.5, 0.25) == V.FAKE
    assert V.verdict(scores(0.25), 0.5, 0.25) == V.REAL
    assert V.verdict(scores(0.7499), 0.5, 0.25) == V.UNCERTAIN
    assert V.verdict(scores(0.2501), 0.5, 0.25) == V.UNCERTAIN
    assert V.verdict(scores(0.5), 0.5, 0.25) == V.UNCERTAIN
    assert V.verdict(scores(0.55), 0.3, 0.15) == V.FAKE  # the threshold moves the band
    # Band 0: the plain call, with the threshold itself called fake.
    assert V.verdict(scores(0.5), 0.5, 0.0) == V.FAKE
    assert V.verdict(scores(0.4999), 0.5, 0.0) == V.REAL
    assert V.in_uncertain_band(0.65, 0.5, 0.2) and not V.in_uncertain_band(0.65, 0.5, 0.1)


def test_a_copy_that_flips_the_call_makes_it_unsure():
    flipping = scores(0.9, {"downscale 0.75": 0.1})
    assert V.flipped_copies(flipping, 0.5) == ["downscale 0.75"]
    assert V.verdict(flipping, 0.5, 0.15) == V.UNSURE
    assert "downscale 0.75" in V.verdict_sentence(flipping, 0.5, 0.15)
    both = scores(0.2, {"JPEG 90": 0.6, "downscale 0.75": 0.7})
    assert V.flipped_copies(both, 0.5) == ["JPEG 90", "downscale 0.75"]
    assert V.verdict(both, 0.5, 0.0) == V.UNSURE
    assert V.verdict(flipping, 0.05, 0.0) == V.FAKE  # no flip at a low threshold
    assert V.verdict(scores(0.52, {"JPEG 90": 0.4}), 0.5, 0.15) == V.UNCERTAIN  # band first
    assert V.verdict(V.Scores(0.9, copies={}), 0.5, 0.15) == V.FAKE  # stability not checked
    assert "stays there after JPEG 90 and downscale 0.75" in V.verdict_sentence(
        scores(0.9), 0.5, 0.15)
    unscored = SimpleNamespace(p_fake=None, copies={}, members={})  # any Scored will do
    assert V.verdict(unscored, 0.5, 0.15) == "" and V.verdict_sentence(unscored, 0.5, 0.15) == ""


def test_members_agree_only_when_all_make_the_same_call():
    assert V.members_agree(scores(0.8), 0.5) is None
    ensemble = scores(0.8, members={"spectral": 0.9, "cnn": 0.7})
    assert V.members_agree(ensemble, 0.5) is True
    assert V.members_agree(ensemble, 0.8) is False
    assert V.verdict(ensemble, 0.8, 0.0) == V.FAKE  # members inform, the ensemble's P(fake) decides


def test_score_images_scores_the_copies_in_the_same_call():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8),
              np.full((20, 20, 3), 200, np.uint8)]
    detector = BrightnessDetector()
    out = V.score_images(detector, images)
    assert detector.batches == [[(40, 48, 3), (40, 48, 3), (30, 36, 3),
                                 (20, 20, 3), (20, 20, 3), (15, 15, 3)]]
    assert out[1] == V.Scores(200 / 255, {"JPEG 90": pytest.approx(200 / 255, abs=0.01),
                                          "downscale 0.75": pytest.approx(200 / 255)},
                              {"bright": 200 / 255, "dark": 1 - 200 / 255})
    assert out[0].copies["JPEG 90"] == jpeg(images[0], 90).mean() / 255
    assert out[0].copies["downscale 0.75"] == resize(images[0], 0.75, "area").mean() / 255
    plain = V.score_images(detector, images, stability=False)
    assert detector.batches[-1] == [(40, 48, 3), (20, 20, 3)] and plain[0].copies == {}
    assert V.score_images(detector, []) == [] and len(detector.batches) == 2


@pytest.mark.parametrize("band", ["-0.1", "0.6", "wide", "nan"])
def test_scan_refuses_a_band_outside_0_to_0_5(band, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["scan", str(tmp_path), "--detector", str(tmp_path), "--band", band])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "argument --band: expected a number from 0 to 0.5 (0: plain fake/real)" in err
