"""Hugging Face ``datasets`` as a source, built and saved here with the ``datasets`` library:
labeled splits read with their ClassLabel names, a Parquet pile streamed and labeled like the
same images in memory, its selected images read back, and one-line errors for what is missing."""

from __future__ import annotations

import pytest
import torch

from noisystudent.core import runs
from noisystudent.core.config import SelfTrainConfig, SharedSettings
from noisystudent.core.errors import UserError
from noisystudent.data import hf, shards
from noisystudent.data.fashion_mnist import load_fashion_mnist
from noisystudent.data.sources import load_labeled, load_test_set
from noisystudent.data.unlabeled import teacher_run_unlabeled
from noisystudent.labels.selected_shards import selected_shards
from noisystudent.stages.pseudo_label import pseudo_label

from .conftest import needs_fashion_mnist
from .test_shards import LABEL, png, stored

datasets = pytest.importorskip("datasets")

PER_CLASS = 6
PILE_FILES = 3


def image_dataset(images: torch.Tensor, labels: list[int] | None = None, names=None):
    """The images as PNG bytes in an Image column (and a ClassLabel column)."""
    features = {"image": datasets.Image()}
    columns = {"image": [{"bytes": png(image), "path": None} for image in images]}
    if labels is not None:
        features["label"] = datasets.ClassLabel(names=names)
        columns["label"] = labels
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Fashion-MNIST's first PER_CLASS training images a class and first 50 test images, as
    a DatasetDict saved with save_to_disk."""
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    picks = torch.cat([torch.nonzero(train.labels == c).flatten()[:PER_CLASS]
                       for c in range(10)])
    dataset = datasets.DatasetDict({
        "train": image_dataset(train.images[picks], train.labels[picks].tolist(), train.classes),
        "test": image_dataset(test.images[:50], test.labels[:50].tolist(), test.classes)})
    folder = tmp_path_factory.mktemp("hf") / "saved"
    dataset.save_to_disk(str(folder))
    return folder, train.images[picks], train.labels[picks]


@pytest.fixture(scope="module")
def parquet_pile(tiny_teacher, tmp_path_factory):
    """The teacher's first 300 unlabeled images in PILE_FILES Parquet files, one broken."""
    images, _ = teacher_run_unlabeled(tiny_teacher, max_images=300)
    dataset = image_dataset(images.images)
    rows = dataset.to_list()
    rows.insert(130, {"image": {"bytes": b"not an image", "path": None}})
    dataset = datasets.Dataset.from_list(rows, features=dataset.features)
    folder = tmp_path_factory.mktemp("hf") / "pile"
    folder.mkdir()
    for n in range(PILE_FILES):
        dataset.shard(PILE_FILES, n, contiguous=True).to_parquet(
            str(folder / f"train-{n:05d}-of-{PILE_FILES:05d}.parquet"))
    return images, folder


@needs_fashion_mnist
def test_a_saved_dataset_reads_its_splits_with_the_classlabel_names(saved):
    folder, images, labels = saved
    train = load_labeled(str(folder), 28, 1, False)
    assert train.classes == load_fashion_mnist("test").classes
    assert torch.equal(train.labels, labels) and torch.equal(train.images, images)
    settings = SharedSettings(data=str(folder), test_data=str(folder), channels=1)
    test = load_test_set(settings, 28, classes=train.classes)
    assert len(test) == 50  # the 'test' split by default
    named = load_labeled(f"{folder}#test", 28, 1, False)
    assert torch.equal(named.images, test.images)
    assert load_labeled(str(folder), 40, 3, False).images.shape == (60, 3, 40, 40)


@needs_fashion_mnist
def test_a_parquet_pile_labels_like_the_same_images_in_memory(tmp_path, tiny_teacher,
                                                              parquet_pile):
    images, folder = parquet_pile
    source = shards.open_source(str(folder), 28, 1, False)
    assert len(source.shards) == PILE_FILES and source.description == f"dataset {folder}"
    summary = pseudo_label(tiny_teacher, tmp_path / "hf", LABEL, unlabeled=str(folder),
                           quiet=True)
    memory = pseudo_label(tiny_teacher, tmp_path / "memory", LABEL, images=(images, "memory"),
                          quiet=True)
    assert summary["skipped"] == 1 and summary["unlabeled_images"] == 300
    torch.testing.assert_close(stored(tmp_path / "hf", "confidence"),
                               stored(tmp_path / "memory", "confidence"))
    assert summary["selected"] == memory["selected"]
    # The selected images are the pile's own bytes, read back in tar shards for the student.
    assert sum(1 for _ in selected_shards(tmp_path / "hf")) >= 1
    ours = {sample.data for shard in range(PILE_FILES) for sample in source.samples(shard)}
    from webdataset.tariterators import tarfile_samples

    for path in selected_shards(tmp_path / "hf"):
        for sample in tarfile_samples([{"url": str(path)}]):
            assert sample["png"] in ours


def test_a_saved_dataset_is_cut_into_shards_of_rows(tmp_path, monkeypatch):
    blank = torch.zeros(25, 1, 8, 8, dtype=torch.uint8)
    image_dataset(blank).save_to_disk(str(tmp_path / "pile"))
    monkeypatch.setattr(hf, "ROWS_PER_SHARD", 10)
    source = shards.open_source(str(tmp_path / "pile"), 8, 1, False)
    assert [(s.start, s.stop) for s in source.shards] == [(0, 10), (10, 20), (20, 25)]
    assert [len(list(source.samples(n))) for n in range(3)] == [10, 10, 5]
    assert next(source.samples(2)).extension == "png"
    limited = shards.open_source(str(tmp_path / "pile"), 8, 1, False, max_images=12)
    assert [(s.start, s.stop) for s in limited.shards] == [(0, 10), (10, 12)]


@needs_fashion_mnist
def test_datasets_sources_give_one_line_errors(tmp_path, saved, parquet_pile):
    folder, _, _ = saved
    with pytest.raises(UserError, match=r"no split 'valid' \(it has: train, test\)"):
        load_labeled(f"{folder}#valid", 28, 1, False)
    _, pile = parquet_pile
    with pytest.raises(UserError, match="no label column .* --label-column"):
        load_labeled(str(pile), 28, 1, False)
    datasets.Dataset.from_dict({"x": [1, 2]}).save_to_disk(str(tmp_path / "numbers"))
    with pytest.raises(UserError, match="no image column .* --image-column"):
        load_labeled(str(tmp_path / "numbers"), 28, 1, False)
    with pytest.raises(UserError, match="no column 'picture'"):
        load_labeled(str(folder), 28, 1, False, columns=("picture", None))
    with pytest.raises(UserError, match=r"not in the local Hugging Face cache.*download it "
                                        r"first"):
        load_labeled("hf:nobody/no-such-dataset", 28, 1, False)


@needs_fashion_mnist
def test_strict_stops_at_the_broken_image(tmp_path, tiny_teacher, parquet_pile, monkeypatch):
    _, pile = parquet_pile
    strict = runs.read_yaml(tiny_teacher / runs.CONFIG) | {"strict": True}
    monkeypatch.setattr(runs, "read_yaml", lambda path: strict)
    with pytest.raises(UserError, match=r"unreadable image .*pile\[1\]:29"):
        pseudo_label(tiny_teacher, tmp_path / "strict", LABEL, unlabeled=str(pile),
                     quiet=True)


def test_named_columns_and_classes_from_a_column_of_names(tmp_path):
    blank = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    rows = {"picture": [{"bytes": png(b), "path": None} for b in blank],
            "kind": ["shoe", "bag", "shoe", None]}
    datasets.Dataset.from_dict(rows, features=datasets.Features(
        {"picture": datasets.Image(), "kind": datasets.Value("string")})).save_to_disk(
        str(tmp_path / "named"))
    images = load_labeled(str(tmp_path / "named"), 8, 1, False, columns=(None, "kind"))
    assert images.classes == ["bag", "shoe"]  # the row without a label is left out
    assert images.labels.tolist() == [1, 0, 1]


@pytest.mark.slow
@needs_fashion_mnist
def test_self_train_from_datasets(tmp_path, saved, parquet_pile):
    folder, _, _ = saved
    _, pile = parquet_pile
    tiny = {"model": "resnet10t", "pretrained": "none", "epochs": 1, "batch_size": 8,
            "image_size": 32}
    config = SelfTrainConfig(
        data=str(folder), test_data=str(folder), channels=1, labels_per_class=0,
        unlabeled=str(pile), iterations=1, corruptions=False, teacher=tiny,
        pseudo_label={"threshold": 0.0, "workers": 1},
        student=tiny | {"passes": 1, "workers": 1, "shuffle_buffer": 100})
    from noisystudent.stages.selftrain import self_train

    report = self_train(config, tmp_path / "run", quiet=True)
    labels = runs.read_json(tmp_path / "run" / "iter1" / "pseudo-labels" / "summary.json")
    assert labels["unlabeled_images"] == 300 and labels["skipped"] == 1
    assert [row["role"] for row in report["rows"]] == ["teacher", "student 1"]
    assert all(row["test_top1"] is not None for row in report["rows"])
    assert (tmp_path / "run" / "report.html").is_file()
