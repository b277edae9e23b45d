"""Offline ImageNet weights: the packaged EfficientNet-Lite0 really is pretrained."""

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from forensics.backbones import BackboneError, create_backbone, normalisation


def test_packaged_lite0_classifies_chelsea_as_egyptian_cat():
    model = create_backbone().eval()
    mean, std = (torch.tensor(v)[:, None, None] for v in normalisation(model))
    image = cv2.resize(skimage.data.chelsea(), (224, 224), interpolation=cv2.INTER_AREA)
    x = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - mean) / std
    with torch.inference_mode():
        probs = model(x[None]).softmax(1)[0]
    assert probs.argmax().item() == 285  # ImageNet "Egyptian cat"
    assert probs[285] > 0.5


def test_missing_offline_weights_is_a_clear_error(tmp_path):
    with pytest.raises(BackboneError, match="offline"):
        create_backbone("resnet18")
    bad = tmp_path / "w.safetensors"
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(3)}, bad)
    with pytest.raises(BackboneError, match="tensors"):
        create_backbone("tf_efficientnet_lite0", weights=bad)


def test_new_head_and_random_init_only_when_asked():
    model = create_backbone(num_classes=1)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1)
    scratch = create_backbone("resnet18", pretrained=False, num_classes=1)
    assert np.isfinite(scratch.eval()(torch.zeros(1, 3, 32, 32)).item())
