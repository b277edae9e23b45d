"""Quality metrics: Frechet distance, KID, precision/recall, image embedding, `zoo metrics`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image
from torch import nn

from forensics.cli import main as cli
from generators.quality import (PooledAndProbabilities, embed_images, frechet_distance,
                                inception_feature_model, inception_score,
                                kernel_distance, precision_recall)
from generators_support import one_thread, write_blob_images  # noqa: F401 (fixture)


def reference_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's general matrix square root."""
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


@pytest.mark.parametrize("shape", [(300, 20), (40, 64)])  # more rows than features, and fewer
def test_frechet_distance_matches_the_formula(shape):
    rng = np.random.default_rng(0)
    a = rng.normal(size=shape) @ rng.normal(size=(shape[1], shape[1]))
    b = rng.normal(size=(shape[0] + 7, shape[1])) * 1.5 + 0.3
    assert frechet_distance(a, b) == pytest.approx(reference_frechet(a, b), rel=1e-6)


def test_frechet_distance_is_zero_to_itself_and_grows_with_noise():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(64, 256))  # fewer images than features, as with small sets
    assert abs(frechet_distance(features, features)) < 1e-8
    distances = [frechet_distance(features, features + rng.normal(scale=s, size=features.shape))
                 for s in (0.05, 0.2, 0.5, 1.0)]
    assert distances == sorted(distances) and distances[0] > 0


def test_kid_is_near_zero_for_one_distribution_and_adapts_its_subsets():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(150, 32)), rng.normal(size=(120, 32))
    same, std, size = kernel_distance(a, b, num_subsets=20, subset_size=1000)
    assert size == 120  # subsets shrink to the smaller set
    assert abs(same) < 0.05
    shifted, _, _ = kernel_distance(a, b + 1.0, num_subsets=20)
    assert shifted > 20 * max(abs(same), std)


def test_precision_recall_tell_fidelity_from_coverage():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(200, 8))
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    collapsed = np.repeat(real[:2], 25, axis=0) + rng.normal(scale=0.01, size=(50, 8))  # 2 modes
    precision, recall = precision_recall(real, collapsed)
    assert precision == 1.0 and recall < 0.2
    far = real + 100.0
    assert precision_recall(real, far) == (0.0, 0.0)
    with pytest.raises(ValueError, match="N >= 4"):
        precision_recall(real[:3], real)


def test_embed_images_resizes_and_normalises(tmp_path):
    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "red.png")
    Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / "blue.png")
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    features = embed_images([tmp_path / "red.png", tmp_path / "blue.png"], pool, size=12,
                            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), batch_size=1)
    assert features.dtype == np.float64
    np.testing.assert_allclose(features, [[1, -1, -1], [-1, -1, 1]], atol=1e-6)


def test_inception_score_on_known_classifiers():
    # A classifier that gives every image the same distribution: no information, IS = 1.
    assert inception_score(np.full((40, 1000), 1 / 1000)) == pytest.approx((1.0, 0.0))
    # Confident and balanced over k classes: IS = k (in every split, k divides each part).
    for k in (1, 4, 10):
        one_hot = np.eye(k)[np.arange(20 * k) % k]
        assert inception_score(one_hot, splits=10) == pytest.approx((k, 0.0))
    # Confident but all in one class of k: back to 1; half as varied as k classes: k / 2.
    assert inception_score(np.eye(8)[np.zeros(40, dtype=int)])[0] == pytest.approx(1.0)
    assert inception_score(np.eye(8)[np.arange(40) % 4], splits=2)[0] == pytest.approx(4.0)
    # Unnormalised scores are normalised per row; too few images for the splits are refused.
    assert inception_score(3 * np.eye(5)[np.arange(20) % 5], splits=2)[0] == pytest.approx(5.0)
    with pytest.raises(ValueError, match="N >= 20"):
        inception_score(np.eye(5)[np.arange(10) % 5])


def test_embed_images_returns_features_and_probabilities_in_one_pass(tmp_path):
    for k, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        Image.new("RGB", (8, 8), colour).save(tmp_path / f"{k}.png")
    body = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    head = nn.Linear(3, 2)
    with torch.no_grad():  # logit 0: red minus blue, logit 1: blue minus red
        head.weight.copy_(torch.tensor([[10.0, 0, -10], [-10, 0, 10]])), head.bias.zero_()
    features, probabilities = embed_images(
        sorted(tmp_path.glob("*.png")), PooledAndProbabilities(body, head), size=8,
        mean=(0, 0, 0), std=(1, 1, 1))
    np.testing.assert_allclose(features, [[1, 0, 0], [0, 0, 1]], atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-6)
    assert probabilities[0, 0] > 0.99 and probabilities[1, 1] > 0.99


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    write_blob_images(root / "real", n=8, size=32, seed=0)
    write_blob_images(root / "fake", n=8, size=32, seed=1)
    return root


def test_metrics_command_names_its_backbone(image_sets, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    assert cli(["zoo", "metrics", "--real", str(image_sets / "real"), "--fake",
                str(image_sets / "fake"), "--device", "cpu", "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "FD_tf_efficientnet_lite0:" in printed and "FID" not in printed.replace(
        "Inception FID and IS unavailable", "")
    assert "Inception FID and IS unavailable" in printed
    report = json.loads(out.read_text())
    assert report["backbone"] == "tf_efficientnet_lite0" and report["input_size"] == 224
    assert report["FD_tf_efficientnet_lite0"] > 0 and report["kid_subset_size"] == 8
    assert 0 <= report["precision_tf_efficientnet_lite0"] <= 1
    assert report["FD_inception_v3"] is None and report["IS_inception_v3"] is None
    # 8 fakes: 4 parts of 2; the score lies between 1 and the number of images in a part.
    assert report["is_splits"] == 4 and 1 <= report["IS_tf_efficientnet_lite0"] <= 2
    assert "IS_tf_efficientnet_lite0:" in printed


def test_inception_weights_from_a_local_file(image_sets, tmp_path, capsys):
    from safetensors.torch import save_file
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    state = inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "inception.safetensors")
    model = inception_feature_model(tmp_path / "inception.safetensors")
    features, probabilities = model(torch.zeros(1, 3, 299, 299))
    assert features.shape == (1, 2048) and probabilities.shape == (1, 1000)
    (tmp_path / "bad.safetensors").write_bytes(b"not a state dict")
    assert cli(["zoo", "metrics", "--real", str(image_sets / "real"), "--fake",
                str(image_sets / "real"), "--inception-weights", str(tmp_path / "bad.safetensors"),
                "-q"]) == 2
    assert "--inception-weights" in capsys.readouterr().err
