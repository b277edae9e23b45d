"""The CNN on the NPR residual: a small from-scratch backbone, augmentation that keeps the 2x2
grid, scoring of native-resolution tiles at even offsets with mean or top-k pooling."""

import json

import numpy as np
import pytest
import timm
import torch
from sklearn.metrics import average_precision_score
from torch import nn

import forensics.backbones as backbones
from forensics.backbones import create_backbone
from forensics.detectors import create_detector, load_detector
from forensics.detectors.cnn import CNNDetector, pool_logits
from forensics.explain import gradcam
from test_spectral_detector import corpus

NPR = {"input": "npr", "backbone": "npr_resnet", "progress": False, "threads": 1}


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to fetch pretrained weights fails the test."""

    def refuse(name):
        raise AssertionError(f"tried to fetch weights for {name}")

    monkeypatch.setattr(backbones, "_from_hub_cache", refuse)


def coordinates(height: int, width: int) -> np.ndarray:
    """An image whose red and green values are each pixel's row and column."""
    rows, cols = np.indices((height, width))
    return np.stack([rows, cols, np.zeros_like(rows)], axis=-1).astype(np.uint8)


def dihedral(view: np.ndarray) -> list[np.ndarray]:
    """The 8 flips and 90-degree rotations of an image."""
    return [np.rot90(v, k) for v in (view, view[:, ::-1]) for k in range(4)]


class MeanPixel(nn.Module):
    """A stand-in network whose logit is a tile's mean pixel in [0, 1]; records its inputs."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.extend(x.clone())
        return x.mean(dim=(1, 2, 3))


def test_npr_backbone_is_small_and_built_without_weights(offline):
    assert "npr_resnet" in timm.list_models("npr*")
    model = create_backbone("npr_resnet", pretrained=True, num_classes=1)  # pretrained implied off
    n_params = sum(p.numel() for p in model.parameters())
    assert 1.3e6 < n_params < 1.6e6, n_params
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (2, 2)
    assert [info["reduction"] for info in model.feature_info] == [2, 4, 8]
    assert model.eval()(torch.zeros(2, 3, 48, 48)).shape == (2, 1)
    assert CNNDetector(backbone="npr_resnet").resolved_params()["pretrained"] is False


def test_npr_defaults_leave_the_rgb_recipe_alone():
    rgb, npr = CNNDetector().resolved_params(), CNNDetector(input="npr").resolved_params()
    assert (rgb["p_blur"], rgb["p_jpeg"], rgb["rot90"], rgb["pool"]) == (0.5, 0.5, False, "mean")
    assert (npr["p_blur"], npr["p_jpeg"], npr["rot90"]) == (0.0, 0.0, True)
    assert CNNDetector(input="npr", p_jpeg=0.3).p_jpeg == 0.3  # still settable
    assert CNNDetector(**npr).resolved_params() == npr == json.loads(json.dumps(npr))


def test_npr_views_are_flips_and_rotations_of_even_offset_crops():
    image = coordinates(71, 93)  # odd sides
    detector = CNNDetector(input="npr")
    rng = np.random.default_rng(0)
    transforms, offsets = set(), set()
    for _ in range(200):
        view = detector.augment(image, rng, 32)
        top, left = int(view[..., 0].min()), int(view[..., 1].min())
        assert top % 2 == 0 and left % 2 == 0
        crop = image[top:top + 32, left:left + 32]
        matches = [k for k, t in enumerate(dihedral(crop)) if np.array_equal(t, view)]
        assert matches, "the view is not a flip or rotation of an unchanged crop"
        transforms.add(matches[0])
        offsets.add((top, left))
    assert transforms == set(range(8)) and len(offsets) > 50
    # Smaller than the crop: padded by an even amount before it, so pixel (0, 0) stays even.
    still = CNNDetector(input="npr", flip=False, rot90=False)
    padded = still.augment(coordinates(21, 15), rng, 32)
    (row,), (col,) = np.nonzero((padded[..., 0] == 0) & (padded[..., 1] == 0))
    assert padded.shape == (32, 32, 3) and row % 2 == 0 and col % 2 == 0


def test_pooling_mean_topk_and_max():
    logits = np.array([0.0, 0.0, 0.0, 3.0])
    assert pool_logits(logits) == 0.75
    assert pool_logits(logits, "topk", 2) == 1.5
    assert pool_logits(logits, "topk", 10) == 0.75  # fewer tiles than k: all of them
    assert pool_logits(logits, "max", 2) == 3.0
    with pytest.raises(ValueError, match="pool must be one of mean, topk, max"):
        pool_logits(logits, "median")
    # One bright (say generated) tile in an otherwise dark image of 3 x 3 tiles.
    image = np.zeros((96, 96, 3), dtype=np.uint8)
    image[32:64, 64:96] = 255
    scores = {pool: CNNDetector(input="npr", tile_size=32, pool=pool, pool_k=2).logits(
        [image], MeanPixel()) for pool in ("mean", "topk", "max")}
    assert np.allclose([scores["mean"], scores["topk"], scores["max"]], [[1 / 9], [0.5], [1.0]])


def test_odd_sized_images_are_scored_by_even_native_tiles():
    detector = CNNDetector(input="npr", tile_size=32)
    boxes = detector.tiles(75, 101)
    covered = np.zeros((75, 101), dtype=int)
    for rows, cols in boxes:
        assert rows.start % 2 == 0 and cols.start % 2 == 0
        assert (rows.stop - rows.start, cols.stop - cols.start) == (32, 32)
        covered[rows, cols] += 1
    assert covered[:74, :100].min() == 1 and covered[74].max() == covered[:, 100].max() == 0
    assert detector.tiles(17, 23) == [(slice(0, 16), slice(0, 22))]  # smaller: whole, even
    rng = np.random.default_rng(1)
    large, small = (rng.integers(0, 256, shape, dtype=np.uint8)
                    for shape in [(75, 101, 3), (17, 23, 3)])
    network = MeanPixel()
    logits = detector.logits([large, small], network)
    seen = [(t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for t in network.seen]
    expected = [large[box] for box in boxes] + [small[:16, :22]]
    assert sorted(map(np.ndarray.tobytes, seen)) == sorted(map(np.ndarray.tobytes, expected))
    assert np.isclose(logits[1], small[:16, :22].mean() / 255)


@pytest.fixture(scope="module")
def fitted():
    (x, y), (xv, yv) = corpus(0, 32, [(32, 32)]), corpus(1, 16, [(32, 32), (40, 24)])
    return create_detector("cnn", **NPR, crop_size=32, tile_size=32, epochs=4, batch_size=16,
                           lr=2e-3).fit(x, y, val_images=xv, val_labels=yv)


def test_tiny_fit_on_upsampling_traces_beats_chance(fitted):
    x, y = corpus(2, 20, [(48, 48), (37, 53), (32, 64)])  # sizes unseen, odd sides
    assert average_precision_score(y, fitted.predict_proba(x)) > 0.8
    assert fitted.training_info_["train_crop"] == 32


def test_bundle_round_trip_rebuilds_without_downloads(fitted, tmp_path, offline):
    folder = fitted.save(tmp_path / "npr")
    manifest = json.loads((folder / "detector.json").read_text())
    assert manifest["params"]["backbone"] == "npr_resnet" and manifest["params"]["pool"] == "mean"
    assert manifest["preprocessing"]["train_crop"]["offsets"] == "multiples of 2"
    loaded = load_detector(folder)
    x = corpus(3, 4, [(33, 45)])[0]
    assert np.array_equal(loaded.predict_proba(x), fitted.predict_proba(x))
    heat = gradcam(loaded, x[0])  # odd sides: the unscored last row and column stay finite
    assert heat.shape == (33, 45) and np.isfinite(heat).all()


def test_npr_parameter_errors_name_the_option():
    x, y = corpus(0, 4, [(32, 32)])
    with pytest.raises(ValueError, match="crop_size must be even with input=npr.*crop_size=34"):
        CNNDetector(**NPR, crop_size=33).fit(x, y)
    with pytest.raises(ValueError, match="tile_size must be even"):
        CNNDetector(**NPR, tile_size=255).fit(x, y)
    with pytest.raises(ValueError, match="pool must be one of mean, topk, max, got 'median'"):
        CNNDetector(**NPR, pool="median").fit(x, y)
    with pytest.raises(ValueError, match="pool_k must be a positive integer"):
        CNNDetector(**NPR, pool="topk", pool_k=0).fit(x, y)
