"""Content digests of training inputs: what makes a checkpoint resumable only on the same bytes."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from wsss.core.digests import changed_inputs, file_digest, files_digest, training_inputs
from wsss.core.errors import DataError
from wsss.data.io import read_rgb, write_jpeg
from wsss.data.voc import VOCPaths


def test_file_digest_is_the_sha256_of_the_bytes_and_a_missing_input_names_its_path(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 3_000_000)
    assert file_digest(path) == hashlib.sha256(b"x" * 3_000_000).hexdigest()
    with pytest.raises(DataError, match=r"missing\.png: a training input is missing. Rerun the step that writes it"):
        file_digest(tmp_path / "missing.png")


def test_files_digest_sees_bytes_names_and_order_but_not_the_folder(tmp_path):
    for folder, content in (("one", b"a"), ("two", b"a")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "1.png").write_bytes(content)
        (tmp_path / folder / "2.png").write_bytes(b"b")
    one, two = ([tmp_path / folder / name for name in ("1.png", "2.png")] for folder in ("one", "two"))
    assert files_digest(one) == files_digest(two)  # a moved results folder keeps its digests
    assert files_digest(one) != files_digest(one[::-1])
    (tmp_path / "two" / "1.png").write_bytes(b"c")  # one byte of one file
    assert files_digest(one) != files_digest(two)
    (tmp_path / "two" / "3.png").write_bytes(b"a")
    assert files_digest(one) != files_digest([tmp_path / "two" / "3.png", tmp_path / "two" / "2.png"])


def test_changed_inputs_names_each_differing_input_and_everything_when_nothing_was_recorded():
    current = {"images": "1", "labels": "2", "weights": "3"}
    assert changed_inputs(dict(current), current) == []
    assert changed_inputs({**current, "labels": "x"}, current) == ["labels"]
    assert changed_inputs({"images": "1"}, current) == ["labels", "weights"]
    assert changed_inputs(None, current) == ["images", "labels", "weights"]  # a checkpoint older than digests


def test_training_inputs_change_with_one_image_or_one_label_and_not_with_the_root(tiny_dataset, tmp_path):
    moved = {**tiny_dataset, "voc_root": str(tmp_path / "VOC2012")}
    shutil.copytree(tiny_dataset["voc_root"], moved["voc_root"])
    reference = training_inputs(tiny_dataset, weights="w")
    assert training_inputs(moved, weights="w") == reference and set(reference) == {
        "ids_and_labels",
        "images",
        "weights",
    }
    first = tiny_dataset["splits"]["train_aug"][0]
    relabelled = {**tiny_dataset, "labels": {**tiny_dataset["labels"], first: [0, 1]}}
    assert changed_inputs(reference, training_inputs(relabelled, weights="w")) == ["ids_and_labels"]
    image = VOCPaths.create(moved["voc_root"]).image(first)
    write_jpeg(image, 255 - read_rgb(image))
    assert changed_inputs(reference, training_inputs(moved, weights="w")) == ["images"]
