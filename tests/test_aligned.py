"""Aligned training data: native crops, fakes made from their own real, identical histories."""

from dataclasses import asdict

import numpy as np

from crashsafe.images import load_image
from forensics.aligned import HistoryOdds, PairHistory, Source, degrade, native_crop, \
    write_aligned_pairs
from forensics.corpus import discover_corpus


def photo(seed: int, height: int = 300, width: int = 420) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_native_crops_are_never_resized_and_start_at_even_offsets():
    image, rng = photo(0), np.random.default_rng(1)
    for _ in range(50):
        crop, (left, top, width, height) = native_crop(image, (128, 256), rng)
        assert left % 2 == 0 and top % 2 == 0 and width % 2 == 0 and height % 2 == 0
        assert 128 <= width <= 256 and 128 <= height <= 256
        assert np.array_equal(crop, image[top:top + height, left:left + width])
    small = photo(1, 90, 101)  # smaller than the sizes: the whole photo (even sides)
    crop, box = native_crop(small, (128, 256), rng)
    assert crop.shape == (90, 100, 3) and box[2:] == [100, 90]


def test_histories_are_drawn_with_their_odds():
    rng = np.random.default_rng(0)
    drawn = [HistoryOdds().draw(rng) for _ in range(2000)]
    jpeg = [h.jpeg_quality for h in drawn if h.jpeg_quality is not None]
    assert 0.45 < len(jpeg) / 2000 < 0.55 and min(jpeg) >= 65 and max(jpeg) <= 100
    assert 0.2 < sum(h.resize is not None for h in drawn) / 2000 < 0.32
    never = HistoryOdds(p_resize=0, p_blur=0, p_jpeg=0).draw(rng)
    assert never == PairHistory()
    image = photo(2)
    assert np.array_equal(degrade(image, never), image)
    assert not np.array_equal(degrade(image, PairHistory(jpeg_quality=70)), image)


def test_pairs_share_content_size_split_and_history(tmp_path):
    sources = [Source("a", "train", photo(3)), Source("b", "val", photo(4))]
    makers = {"flip": lambda im: np.ascontiguousarray(im[::-1]),
              "invert": lambda im: 255 - im}
    out = write_aligned_pairs(tmp_path / "pairs", sources, makers, crops_per_source=6,
                              odds=HistoryOdds(p_jpeg=0.0, p_blur=0.0), seed=0, progress=False)
    corpus = discover_corpus(out)
    items = corpus.select(split="all")
    assert len(items) == 2 * 2 * 6
    by_pair: dict[int, list] = {}
    for item in items:
        by_pair.setdefault(item.meta["pair"], []).append(item)
    assert {it.generator for it in items if it.label == 1} == {"flip", "invert"}
    for pair in by_pair.values():
        real = next(it for it in pair if it.label == 0)
        fake = next(it for it in pair if it.label == 1)
        assert real.split == fake.split and real.meta["history"] == fake.meta["history"]
        a, b = load_image(real.path), load_image(fake.path)
        assert a.shape == b.shape  # same size: made from it
        expected = a[::-1] if fake.generator == "flip" else 255 - a
        assert np.array_equal(b, expected)  # lossless PNG, no history (odds 0)
    assert {it.split for it in items} == {"train", "val"}


def test_unaligned_data_for_ablations_gives_the_history_to_the_reals_only(tmp_path):
    sources = [Source("a", "train", photo(5))]
    out = write_aligned_pairs(tmp_path / "pairs", sources, {"copy": np.copy}, crops_per_source=8,
                              odds=HistoryOdds(p_jpeg=1.0, p_resize=0.0), seed=1,
                              aligned=False, progress=False)
    items = discover_corpus(out).select(split="all")
    reals = [it for it in items if it.label == 0]
    fakes = [it for it in items if it.label == 1]
    assert all(it.meta["history"]["jpeg_quality"] is not None for it in reals)
    assert all(it.meta["history"] == asdict(PairHistory()) for it in fakes)
    boxes = {it.meta["pair"]: it.meta["crop"] for it in reals}
    assert any(it.meta["crop"] != boxes[it.meta["pair"]] for it in fakes)  # other content
    for fake in fakes:  # the maker's output, untouched: a crop of the photo as it is
        left, top, width, height = fake.meta["crop"]
        assert np.array_equal(load_image(fake.path), photo(5)[top:top + height, left:left + width])
