"""Corpus discovery in its three layouts, deterministic splits, and the bundled real corpus."""

import json
from collections import Counter

import numpy as np
import pytest

from crashsafe.images import load_image, save_png
from forensics.bundled import SOURCE_PHOTOS, write_bundled_corpus
from forensics.corpus import (FAKE, REAL, CorpusError, discover_corpus, image_splits,
                              iter_image_files, split_for)


def _png(path, value=0):
    save_png(np.full((8, 8, 3), value, np.uint8), path)


def test_split_is_deterministic_and_near_fractions():
    names = [f"img_{i}.png" for i in range(3000)]
    splits = [split_for(n) for n in names]
    assert splits == [split_for(n) for n in names]
    share = Counter(splits)
    assert abs(share["train"] / 3000 - 0.70) < 0.03
    assert abs(share["val"] / 3000 - 0.15) < 0.03


def test_adding_files_keeps_old_splits(tmp_path):
    for i in range(20):
        _png(tmp_path / "real" / f"{i}.png")
    before = {it.path: it.split for it in discover_corpus(tmp_path).items}
    for i in range(20, 60):
        _png(tmp_path / "real" / f"{i}.png")
    after = {it.path: it.split for it in discover_corpus(tmp_path).items}
    assert all(after[p] == s for p, s in before.items())


def test_real_fake_layout(tmp_path):
    for i in range(3):
        _png(tmp_path / "real" / "sub" / f"r{i}.png")
        _png(tmp_path / "fake" / "dcgan" / f"d{i}.png")
    _png(tmp_path / "fake" / "stylegan" / "s0.jpg")
    (tmp_path / "real" / "notes.txt").write_text("not an image")
    corpus = discover_corpus(tmp_path)
    assert corpus.layout == "real-fake"
    assert len(corpus.select(label=REAL)) == 3
    assert corpus.generators == ["dcgan", "stylegan"]
    rows = {(r["label"], r["generator"]): r["total"] for r in corpus.counts()}
    assert rows == {("real", "-"): 3, ("fake", "dcgan"): 3, ("fake", "stylegan"): 1}


def test_cnndetection_layout_names_generator_by_set(tmp_path):
    for gen in ("progan/airplane", "progan/cat", "stylegan"):
        _png(tmp_path / gen / "0_real" / "a.png")
        _png(tmp_path / gen / "1_fake" / "b.png")
    corpus = discover_corpus(tmp_path)
    assert corpus.layout == "cnndetection"
    assert corpus.generators == ["progan", "stylegan"]
    assert Counter(it.generator for it in corpus.select(label=FAKE)) == {"progan": 2, "stylegan": 1}
    assert {it.meta["set"] for it in corpus.select(label=REAL)} == {"progan", "stylegan"}


def test_manifest_layout_split_and_duplicates(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    rows = [{"path": "a.png", "label": "fake", "generator": "dcgan", "seed": 3, "split": "test"},
            {"path": "b.png", "label": "real", "generator": None},
            {"path": "a.png", "label": "fake", "generator": "dcgan", "seed": 3, "split": "test"}]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    corpus = discover_corpus(tmp_path)
    assert corpus.layout == "manifest" and len(corpus.items) == 2
    fake = corpus.select(label=FAKE)[0]
    assert (fake.generator, fake.split, fake.meta["seed"]) == ("dcgan", "test", 3)


@pytest.mark.parametrize("line, reason", [("{not json", "not valid JSON"),
                                          ('{"path": "a.png", "label": "maybe"}', "label"),
                                          ('{"label": "real"}', "path")])
def test_bad_manifest_names_line(tmp_path, line, reason):
    (tmp_path / "manifest.jsonl").write_text(line + "\n")
    with pytest.raises(CorpusError, match=reason) as err:
        discover_corpus(tmp_path)
    assert "line 1" in str(err.value)


def test_missing_and_unlabelled_folders_are_clear_errors(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        discover_corpus(tmp_path / "nope")
    _png(tmp_path / "x.png")
    with pytest.raises(CorpusError, match="datasets.md"):
        discover_corpus(tmp_path)


def test_image_splits_are_the_corpus_readers_or_the_path_hash(tmp_path):
    """What a translation inherits from each source image (forensics zoo sample --source)."""
    plain = tmp_path / "plain"
    for name in ("a.png", "sub/b.png"):
        _png(plain / name)
    assert image_splits(plain) == [(plain / "a.png", split_for("a.png")),
                                   (plain / "sub" / "b.png", split_for("sub/b.png"))]
    corpus = tmp_path / "corpus"
    _png(corpus / "x.png")
    (corpus / "manifest.jsonl").write_text('{"path": "x.png", "label": "real", "split": "val"}\n')
    assert image_splits(corpus) == [(corpus / "x.png", "val")]
    (corpus / "manifest.jsonl").write_text("{oops\n")  # unknown splits are not guessed
    with pytest.raises(CorpusError, match="line 1"):
        image_splits(corpus)
    with pytest.raises(CorpusError, match="pass a folder of images"):
        image_splits(tmp_path / "missing")


def test_iter_image_files_survives_symlink_loop(tmp_path):
    _png(tmp_path / "a" / "x.png")
    (tmp_path / "a" / "loop").symlink_to(tmp_path, target_is_directory=True)
    assert [p.name for p in iter_image_files([tmp_path])] == ["x.png"]


def test_bundled_corpus_is_reproducible_and_split_by_photo(tmp_path):
    a = write_bundled_corpus(tmp_path / "a", size=32, count=60, seed=7)
    b = write_bundled_corpus(tmp_path / "b", size=32, count=60, seed=7)
    assert (a / "manifest.jsonl").read_text() == (b / "manifest.jsonl").read_text()
    corpus = discover_corpus(a)
    assert len(corpus.items) == 60
    for it in corpus.items[:5]:
        assert (load_image(it.path) == load_image(b / it.path.relative_to(a))).all()
        assert load_image(it.path).shape == (32, 32, 3)
    photos_by_split = {s: {it.meta["source"] for it in corpus.select(split=s)}
                       for s in ("train", "val", "test")}
    assert photos_by_split["test"] and photos_by_split["val"]
    assert not photos_by_split["test"] & photos_by_split["train"]
    assert len({p.name for p in SOURCE_PHOTOS}) >= 15
    c = write_bundled_corpus(tmp_path / "c", size=32, count=60, seed=8)
    assert (c / "manifest.jsonl").read_text() != (a / "manifest.jsonl").read_text()
