"""A detector whose saved threshold collapses under JPEG while its ranking holds: the robustness
report must say so in its JSON, its HTML page and the summary `forensics robustness` prints."""

import json

import numpy as np

from crashsafe.images import save_png
from forensics.cli import main as cli_main
from forensics.detectors import Detector, register_detector

N_PER_CLASS = 6


@register_detector("test_lossless_trace")
class LosslessTraceDetector(Detector):
    """Scores brightness, but trusts it only while the pixel values keep the multiples of 4 this
    test's lossless files have: JPEG and blur keep the ranking and sink every score below 0.5."""

    @property
    def preprocessing(self) -> dict:
        return {}

    def _fit(self, images, labels, validation) -> None:
        pass

    def _predict_proba(self, images) -> np.ndarray:
        brightness = np.array([image.mean() / 255 for image in images])
        lossless = np.array([np.mean(image % 4 == 0) > 0.9 for image in images])
        return brightness * np.where(lossless, 1.0, 0.3)

    def _arrays(self) -> dict:
        return {}

    def _restore(self, folder, arrays) -> None:
        pass


def quantised_image(rng: np.random.Generator, brightness: float) -> np.ndarray:
    """A 32x32 noise image around ``brightness`` (0..1) with every value a multiple of 4."""
    centre = brightness * 255 / 4
    return (4 * np.clip(rng.normal(centre, 3, (32, 32, 3)).round(), 0, 63)).astype(np.uint8)


def test_report_names_a_threshold_collapse_that_ap_hides(tmp_path, capsys):
    rng = np.random.default_rng(0)
    corpus = tmp_path / "corpus"
    for i in range(N_PER_CLASS):  # reals dark, fakes bright: scores ~0.3 and ~0.7 when lossless
        save_png(quantised_image(rng, 0.25 + 0.02 * i), corpus / "real" / f"r{i}.png")
        save_png(quantised_image(rng, 0.65 + 0.02 * i), corpus / "fake" / "bright" / f"f{i}.png")
    images = [quantised_image(rng, b) for b in (0.3, 0.7)]
    bundle = tmp_path / "lossless"
    LosslessTraceDetector().fit(images, [0, 1]).save(bundle)  # no validation: threshold 0.5
    grid = tmp_path / "grid.yaml"
    grid.write_text("blur: {levels: [0, 1]}\njpeg_pil: {levels: [95, 50]}\n")
    out = tmp_path / "run"
    command = ["robustness", "--detector", str(bundle), "--corpus", str(corpus), "--out",
               str(out), "--grid", str(grid), "--split", "all", "-q"]

    # A bar out of range is refused before any image is scored, not after a long run.
    assert cli_main([*command, "--break-balanced-below", "70"]) == 2
    assert "--break-balanced-below must lie in (0, 1], got 70" in capsys.readouterr().err
    assert not out.exists()

    assert cli_main(command) == 0
    printed = capsys.readouterr().out

    document = json.loads((out / "metrics.json").read_text())
    assert document["break_bars"] == {"ap": 0.8, "balanced_accuracy": 0.7}
    jpeg = {r["level"]: r for r in document["metrics"]
            if r["family"] == "jpeg_pil" and r["generator"] == "all"}
    assert jpeg[95]["ap"] == 1.0 and jpeg[95]["balanced_accuracy"] == 0.5
    assert jpeg[95]["fake_accuracy"] == 0.0 and jpeg[95]["real_accuracy"] == 1.0
    points = {p["family"]: p for p in document["breaking_points"]}
    assert points["jpeg_pil"]["level"] == 95
    assert points["jpeg_pil"]["broken_by"] == ["balanced_accuracy"]
    assert points["jpeg_pil"]["text"] == (
        "is already broken at JPEG quality 95: balanced accuracy 0.50 at the saved threshold, "
        "below 0.7 (fake accuracy 0.00: every fake called real, real accuracy 1.00); AP 1.00")
    assert points["blur"]["level"] == 1 and points["blur"]["text"].startswith(
        "breaks at blur sigma 1: balanced accuracy 0.50 at the saved threshold")

    page = (out / "report.html").read_text()
    assert points["jpeg_pil"]["text"] in page and points["blur"]["text"] in page
    assert "balanced accuracy" in page and 'class="low"' in page  # the table marks the cells
    # The summary: every setting with its ranking and threshold figures, and the collapse named.
    assert f"lossless {points['jpeg_pil']['text']}" in printed
    jpeg_line = next(line for line in printed.splitlines() if "jpeg_pil/q=95" in line)
    assert jpeg_line.split()[1:6] == ["jpeg_pil/q=95", "1.000", "0.500", "0.000", "1.000"]
    assert "balanced accuracy < 0.7" in jpeg_line
    blur_line = next(line for line in printed.splitlines() if "blur/sigma=0.0" in line)
    assert blur_line.split()[1:] == ["blur/sigma=0.0", "1.000", "1.000", "1.000", "1.000"]
