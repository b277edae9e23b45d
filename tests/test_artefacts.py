"""The one reader and writer of each artefact: generator runs, corpus manifests, scan results,
robustness results and the app's settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from crashsafe.corpus_manifest import (CORPUS_MANIFEST_NAME, append_manifest, has_manifest,
                                       read_manifest_rows, write_manifest)
from crashsafe.images import ImageLimits, save_png
from forensics.corpus import FAKE, REAL, discover_corpus, training_images
from forensics.evaluation_results import (EVALUATION_FILE, has_evaluation, read_evaluation,
                                          write_evaluation)
from forensics.robustness_results import (FIELDS, RUN_FORMAT, RUN_FORMAT_VERSION,
                                          RobustnessResults, ShardWriter, read_results,
                                          result_row, shard_rows, write_results,
                                          write_run_manifest)
from forensics.scan_results import results_csv, results_jsonl
from forensics.scan_results import write_results as write_scan_results
from forensics.serving import AppConfig
from generators import GeneratorRun, create_generator


def test_generator_run_saves_and_reads_back_its_nets(tmp_path):
    pair = create_generator("dcgan", resolution=16, ngf=4, ndf=4, nz=8)
    run = GeneratorRun.save_pretrained(tmp_path / "run", pair, 7, {"note": "test"})
    again = GeneratorRun.from_pretrained(tmp_path / "run")
    assert (again.name, again.step) == ("dcgan", 7)
    assert again.config == json.loads(json.dumps(pair.config))
    assert again.document["extra"] == {"note": "test"} and again.health == {}
    assert not GeneratorRun.is_run(run.folder)  # no statistics: not written by the trainer
    run.stats_path.write_text('{"step": 1, "loss_d": 1.0}\n')
    assert GeneratorRun.is_run(run.folder) and run.stats() == [{"step": 1, "loss_d": 1.0}]
    loaded = again.load()
    for key, value in pair.generator.state_dict().items():
        assert torch.equal(loaded.generator.state_dict()[key], value)
    assert {run.samples_path.parent, run.curves_path.parent, run.config_path.parent} == {
        run.folder}


def test_corpus_manifest_written_appended_and_read(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    for name in ("a.png", "b.png", "c.png"):
        save_png(image, tmp_path / name)
    write_manifest(tmp_path, [{"path": "a.png", "label": "real", "split": "train"},
                              {"path": "b.png", "label": "fake", "generator": "g"}])
    append_manifest(tmp_path, [{"path": "c.png", "label": "fake", "generator": "h"}])
    assert has_manifest(tmp_path) and (tmp_path / CORPUS_MANIFEST_NAME).is_file()
    assert [row["path"] for row in read_manifest_rows(tmp_path)] == ["a.png", "b.png", "c.png"]
    corpus = discover_corpus(tmp_path)
    assert corpus.layout == "manifest"
    assert [(it.label, it.generator) for it in corpus.items] == [(REAL, None), (FAKE, "g"),
                                                                 (FAKE, "h")]


def test_training_images_from_class_folders_and_refusals(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    for cls in ("cats", "dogs"):
        save_png(image, tmp_path / "plain" / cls / "x.png")
    items = training_images([tmp_path / "plain"], "train")
    assert sorted(name for _, name in items) == ["cats", "dogs"]
    with pytest.raises(ValueError, match="has no manifest"):
        training_images([tmp_path / "plain"], "train", class_key="source")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no real training images"):
        training_images([tmp_path / "empty"], "train")


def test_scan_results_are_written_whole_as_csv_or_jsonl(tmp_path):
    records = [{"path": "a.png", "p_fake": 0.25, "verdict": "real", "error": ""},
               {"path": "b.png", "p_fake": "", "verdict": "", "error": "not an image"}]
    out = write_scan_results(tmp_path / "deep" / "r.csv", records, "csv")
    assert out.read_bytes().decode() == results_csv(records)
    assert out.read_text().splitlines()[0] == "path,p_fake,verdict,error"
    lines = write_scan_results(tmp_path / "r.jsonl", records, "jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        records[0], {"path": "b.png", "p_fake": None, "verdict": None, "error": "not an image"}]
    assert results_jsonl(records) == "\n".join(lines) + "\n"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["r.csv", "r.jsonl"]
    with pytest.raises(ValueError, match="csv, jsonl"):
        write_scan_results(tmp_path / "r.txt", records, "txt")
    assert results_csv(records, ["path", "error"]).splitlines()[1] == "a.png,"


def test_robustness_rows_shards_and_metrics_share_one_reader(tmp_path):
    row = result_row(path="a.png", label="fake", generator="g", detector="d",
                     perturbation="jpeg_pil/q=90", family="jpeg_pil", level=90, score=0.5,
                     error="")
    assert tuple(row) == FIELDS
    writer = ShardWriter(tmp_path, 0)
    writer.append([row])
    writer.close()
    shard = next((tmp_path / "shards").iterdir())
    with shard.open("ab") as f:
        f.write(b'{"path": "cut by a ki')  # a kill mid-write
    assert shard_rows(tmp_path) == [row]
    run = {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, "grid": ["jpeg_pil/q=90"]}
    write_run_manifest(tmp_path, run)
    write_results(tmp_path, [row])
    assert read_results(tmp_path) == [row]
    results = RobustnessResults(tmp_path)
    assert not RobustnessResults.is_results(tmp_path)  # no report yet
    (tmp_path / "metrics.csv").write_text("detector,perturbation,level,ap\nd,jpeg_pil/q=90,90,"
                                          "0.75\nd,social,,0.5\n")
    assert RobustnessResults.is_results(tmp_path)
    assert results.run() == run and results.rows() == [row]
    assert results.metrics() == [
        {"detector": "d", "perturbation": "jpeg_pil/q=90", "level": 90, "ap": 0.75,
         "family": "jpeg_pil"},
        {"detector": "d", "perturbation": "social", "level": None, "ap": 0.5,
         "family": "social"}]
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "jpeg_pil.png").write_bytes(b"")
    assert results.plots() == [tmp_path / "plots" / "jpeg_pil.png"]


def test_app_settings_read_back_what_the_cli_writes(tmp_path):
    settings = AppConfig(tmp_path / "bundle", tmp_path, ImageLimits(max_pixels=10, max_bytes=20),
                         scoring_slots=3)
    assert AppConfig.from_env(settings.to_env()) == settings


def test_evaluation_results_written_atomically_and_checked_on_read(tmp_path):
    result = {"per_generator": [{"generator": "g", "ap": 0.9}], "split": "test"}
    write_evaluation(tmp_path / "out" / EVALUATION_FILE, result)
    assert has_evaluation(tmp_path / "out") and not has_evaluation(tmp_path)
    assert read_evaluation(tmp_path / "out") == result
    (tmp_path / EVALUATION_FILE).write_text('{"split": "test"}')
    with pytest.raises(ValueError, match="not a result of `forensics evaluate`"):
        read_evaluation(tmp_path)


def test_versioned_documents_say_what_is_wrong(tmp_path):
    from crashsafe.documents import (MISSING, NEWER, NOT_JSON, OLDER, WRONG_FORMAT,
                                     DocumentError, read_document)

    path = tmp_path / "doc.json"
    cases = [(None, MISSING), ("{not json", NOT_JSON), ('{"format": "other", "version": 2}',
                                                         WRONG_FORMAT),
             ('{"format": "f", "version": 1}', OLDER), ('{"format": "f", "version": 3}', NEWER)]
    for text, problem in cases:
        if text is not None:
            path.write_text(text)
        with pytest.raises(DocumentError) as caught:
            read_document(path, format="f", version=2)
        assert caught.value.problem == problem
    path.write_text('{"format": "f", "version": 2, "x": 1}')
    assert read_document(path, format="f", version=2)["x"] == 1
