"""DiffAugment: what each transform does, that gradients pass, and that D sees it in training."""

from __future__ import annotations

import pytest
import torch

from generators.augment import diff_augment, parse_policy
from generators.registry import create_generator, get_family
from generators_support import TINY


def ramp(n: int = 6, side: int = 32) -> torch.Tensor:
    """Images whose pixels are all different (1..side^2), so a shift can be read back."""
    image = torch.arange(1, side * side + 1, dtype=torch.float32).view(1, 1, side, side)
    return image.repeat(n, 3, 1, 1)


def test_translation_shifts_each_image_by_at_most_an_eighth_with_zero_fill():
    torch.manual_seed(0)
    x = ramp()
    y = diff_augment(x, "translation")
    side = x.shape[-1]
    for original, shifted in zip(x[:, 0], y[:, 0]):
        i, j = map(int, torch.nonzero(shifted)[0])
        flat = int(shifted[i, j]) - 1
        dy, dx = flat // side - i, flat % side - j  # where the pixel came from
        assert max(abs(dy), abs(dx)) <= side // 8
        for r in range(side):
            for c in range(side):
                inside = 0 <= r + dy < side and 0 <= c + dx < side
                assert shifted[r, c] == (original[r + dy, c + dx] if inside else 0)


def test_cutout_zeroes_one_square_of_half_the_side_per_image():
    torch.manual_seed(1)
    y = diff_augment(torch.ones(8, 3, 32, 32), "cutout")
    for image in y:
        zero = torch.nonzero(image[0] == 0)
        assert len(zero) == 16 * 16
        assert int(zero[:, 0].max() - zero[:, 0].min()) == 15
        assert int(zero[:, 1].max() - zero[:, 1].min()) == 15
        assert torch.equal(image[0], image[2])  # the same square in every channel


def test_color_changes_brightness_saturation_and_contrast_per_image():
    torch.manual_seed(2)
    x = torch.rand(16, 3, 8, 8) * 2 - 1
    y = diff_augment(x, "color")
    shift = (y - x).mean(dim=(1, 2, 3))
    assert shift.std() > 0.05  # each image its own draw


def test_gradients_reach_the_input_through_every_transform():
    torch.manual_seed(3)
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    diff_augment(x, "color,translation,cutout").square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_no_policy_is_the_identity_and_draws_nothing():
    x = torch.rand(2, 3, 8, 8)
    state = torch.get_rng_state()
    assert diff_augment(x, "") is x
    assert torch.equal(torch.get_rng_state(), state)  # runs without it stay bit-identical


def test_unknown_parts_are_refused_by_name():
    assert parse_policy(" color , cutout ") == ("color", "cutout")
    with pytest.raises(ValueError, match=r"\['zoom'\].*color, translation, cutout"):
        create_generator("dcgan", **TINY, diffaugment="color,zoom")
    with pytest.raises(ValueError, match="diffaugment"):
        create_generator("stylegan", resolution=16, diffaugment=3)


@pytest.mark.parametrize("name", ["dcgan", "stylegan"])
def test_the_discriminator_sees_augmented_reals_and_fakes(name):
    torch.manual_seed(4)
    config = TINY if name == "dcgan" else {"resolution": 16, "batch_size": 8, "channel_max": 16}
    pair = create_generator(name, **config, diffaugment="cutout")
    step = get_family(name).resolve_step_class()(pair, torch.device("cpu"))
    seen: list[torch.Tensor] = []
    pair.discriminator.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    real = torch.rand(8, 3, 16, 16) * 2 - 1 + 5  # no real pixel is 0 before augmentation
    stats = step(real)
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    # Each call of D (real, fake, G's fake) got cutout squares: 8 x 8 zeros per image.
    assert len(seen) >= 3
    for batch in seen:
        assert all(int((image[0] == 0).sum()) >= 64 for image in batch)
