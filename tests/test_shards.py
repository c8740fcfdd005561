"""Unlabeled images streamed from WebDataset tar shards and plain folders: labeled in loader
workers like the same images in memory, unreadable members skipped and counted, the selected set
rewritten as tar shards that the student streams."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from webdataset import TarWriter
from webdataset.tariterators import tarfile_samples

from noisystudent.core import runs
from noisystudent.core.config import PseudoLabelConfig, SelfTrainConfig
from noisystudent.core.errors import UserError
from noisystudent.data import shards
from noisystudent.data.images import load_manifest
from noisystudent.data.unlabeled import teacher_run_unlabeled
from noisystudent.labels.directory import pseudo_labels_complete, read_pseudo_labels
from noisystudent.labels.selected_shards import (
    SelectedShardBatches,
    SelectedStream,
    selected_shards,
)
from noisystudent.labels.selection import select_and_balance
from noisystudent.labels.store import label_parts
from noisystudent.stages.pseudo_label import pseudo_label
from noisystudent.stages.selftrain import self_train

from .conftest import needs_fashion_mnist
from .test_distributed import torchrun

SIZES = (80, 80, 80, 60)  # 300 images in 4 shards
LABEL = PseudoLabelConfig(threshold=0.05, per_class=40, precision="fp32", workers=2)


def png(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image[0].numpy()).save(buffer, format="png")
    return buffer.getvalue()


def write_shards(folder: Path, images: torch.Tensor, broken: bool = True) -> str:
    """The images as PNG samples in 4 tar shards; with ``broken``, shard 1 also holds a member
    that is not an image and shard 2 a sample with no image at all."""
    folder.mkdir(parents=True, exist_ok=True)
    done = 0
    for s, count in enumerate(SIZES):
        with TarWriter(str(folder / f"u-{s:04d}.tar")) as tar:
            for j in range(count):
                if broken and (s, j) == (1, 5):
                    tar.write({"__key__": "broken", "png": b"not an image"})
                if broken and (s, j) == (2, 7):
                    tar.write({"__key__": "caption-only", "txt": b"a shoe"})
                tar.write({"__key__": f"{done:06d}", "png": png(images[done])})
                done += 1
    return str(folder / "u-{0000..0003}.tar")


@pytest.fixture(scope="module")
def pile(tiny_teacher, tmp_path_factory):
    """The teacher's first 300 unlabeled images, in memory and as tar shards."""
    images, _ = teacher_run_unlabeled(tiny_teacher, max_images=300)
    pattern = write_shards(tmp_path_factory.mktemp("shards"), images.images)
    return images, pattern


def stored(directory: Path, key: str) -> torch.Tensor:
    return torch.cat([runs.load_weights(p)[key] for p in label_parts(directory)])


@needs_fashion_mnist
def test_tar_shards_label_like_the_same_images_in_memory(tmp_path, tiny_teacher, pile):
    images, pattern = pile
    summary = pseudo_label(tiny_teacher, tmp_path / "shards", LABEL, unlabeled=pattern,
                           quiet=True)
    memory = pseudo_label(tiny_teacher, tmp_path / "memory", LABEL, images=(images, "memory"),
                          quiet=True)
    # Both unreadable samples are skipped and counted; the 300 images get the same labels.
    assert summary["skipped"] == 2 and summary["unlabeled_images"] == 300
    assert summary["pseudo_label_accuracy"] is None  # a tar pile has no true labels
    torch.testing.assert_close(stored(tmp_path / "shards", "confidence"),
                               stored(tmp_path / "memory", "confidence"))
    assert torch.equal(stored(tmp_path / "shards", "predicted"),
                       stored(tmp_path / "memory", "predicted"))
    assert summary["selected"] == memory["selected"] and summary["per_class"] == 40
    # One part per shard, named by the shard; positions skip the unreadable samples.
    assert [p.name for p in label_parts(tmp_path / "shards")] == \
        [f"labels-00000-{s:05d}.safetensors" for s in range(4)]
    positions = runs.load_weights(label_parts(tmp_path / "shards")[1])["position"]
    assert positions.tolist() == list(range(5)) + list(range(6, 81))

    # Selection equals the in-memory rule over the shards' global indices (shard << 32 | pos).
    parts = [runs.load_weights(p) for p in label_parts(tmp_path / "shards")]
    index = torch.cat([p["start"] + p["position"].long() for p in parts])
    chosen = select_and_balance(stored(tmp_path / "shards", "confidence"),
                                stored(tmp_path / "shards", "predicted").long(), 10,
                                threshold=LABEL.threshold, per_class=40, seed=0, index=index)
    expected = Counter(index[chosen].tolist())
    # The selected shards hold each selected image once, its source bytes untouched, with its copies
    # and its soft label as stored; read_pseudo_labels gives the same indices.
    assert Counter(read_pseudo_labels(tmp_path / "shards")[0].tolist()) == expected
    found, sources = Counter(), {}
    for s in range(4):
        for sample in tarfile_samples([{"url": str(Path(pattern).parent / f"u-{s:04d}.tar")}]):
            sources[sample["__key__"]] = sample.get("png")
    for path in selected_shards(tmp_path / "shards"):
        for sample in tarfile_samples([{"url": str(path)}]):
            label = json.loads(sample["json"])
            found[label["index"]] += label["copies"]
            assert sample["png"] == sources[label["name"].rsplit(":", 1)[1]]
            assert len(label["probs"]) == 10 and "classes" not in label
    assert found == expected
    assert sum(found.values()) == summary["selected"]
    assert pseudo_labels_complete(tmp_path / "shards")

    # A torn selected shard makes the directory incomplete (self-train labels it again).
    torn = selected_shards(tmp_path / "shards")[0]
    torn.write_bytes(torn.read_bytes()[:-700])
    assert not pseudo_labels_complete(tmp_path / "shards")


@needs_fashion_mnist
def test_a_folder_of_images_streams_in_shards_and_strict_stops_at_a_broken_one(
        tmp_path, tiny_teacher, pile, monkeypatch):
    images, pattern = pile
    folder = tmp_path / "pile"
    folder.mkdir()
    for i in range(120):
        (folder / f"{i:04d}.png").write_bytes(png(images.images[i]))
    monkeypatch.setattr(shards, "FOLDER_SHARD", 50)  # 3 shards: 50, 50, 20
    summary = pseudo_label(tiny_teacher, tmp_path / "folder", LABEL, unlabeled=str(folder),
                           quiet=True)
    assert len(label_parts(tmp_path / "folder")) == 3 and summary["unlabeled_images"] == 120
    memory = pseudo_label(tiny_teacher, tmp_path / "memory", LABEL,
                          images=(images.subset(list(range(120))), "memory"), quiet=True)
    torch.testing.assert_close(stored(tmp_path / "folder", "confidence"),
                               stored(tmp_path / "memory", "confidence"))
    assert summary["selected"] == memory["selected"]

    (folder / "0050.png").write_bytes(b"truncated")
    skipped = pseudo_label(tiny_teacher, tmp_path / "skip", LABEL, unlabeled=str(folder),
                           quiet=True)
    assert skipped["skipped"] == 1 and skipped["unlabeled_images"] == 119
    strict = runs.read_yaml(tiny_teacher / runs.CONFIG) | {"strict": True}
    monkeypatch.setattr(runs, "read_yaml", lambda path: strict)
    with pytest.raises(UserError, match="unreadable image .*0050.png"):
        pseudo_label(tiny_teacher, tmp_path / "strict", LABEL, unlabeled=str(folder),
                     quiet=True)


def test_shard_sources_give_one_line_errors(tmp_path):
    (tmp_path / "s-0.tar").write_bytes(b"")
    with pytest.raises(UserError, match="2 of 3 shards .* are missing"):
        shards.open_source(str(tmp_path / "s-{0..2}.tar"), 28, 1, False)
    with pytest.raises(UserError, match="not found"):
        shards.open_source(str(tmp_path / "nowhere"), 28, 1, False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images or .tar shards"):
        shards.open_source(str(tmp_path / "empty"), 28, 1, False)
    with pytest.raises(UserError, match="name fewer shards"):
        shards.open_source(str(tmp_path / "s-0.tar"), 28, 1, False, max_images=10)


@needs_fashion_mnist
def test_the_student_streams_every_selected_copy_shuffled_and_seeded(tmp_path, tiny_teacher,
                                                                     pile):
    _, pattern = pile
    pseudo_label(tiny_teacher, tmp_path / "labels", LABEL, unlabeled=pattern, quiet=True)
    tars = selected_shards(tmp_path / "labels")
    copies = Counter()
    for path in tars:
        for sample in tarfile_samples([{"url": str(path)}]):
            label = json.loads(sample["json"])
            copies[label["index"]] = label["copies"]
    total = sum(copies.values())

    stream = SelectedStream(tars, num_classes=10, size=28, channels=1, batch_size=8,
                            temperature=1.0, seed=0, buffer=50)
    samples = stream._samples(1, 0)
    # A pass holds every selected image as often as it was selected.
    assert Counter(next(samples)[1]["index"] for _ in range(total)) == copies

    def batches(epoch: int, world: tuple[int, int] = (0, 1)) -> list[torch.Tensor]:
        loader = SelectedShardBatches(tars, 16, torch.device("cpu"), num_classes=10, size=28,
                                      channels=1, temperature=1.0, seed=3, steps=4, workers=2,
                                      buffer=64)
        loader.set_shard(*world)
        loader.set_epoch(epoch)
        out = list(loader)
        assert len(out) == 4 and out[0]["images"].shape == (16 // world[1], 1, 28, 28)
        torch.testing.assert_close(out[0]["labels"].sum(1), torch.ones(16 // world[1]))
        return [b["images"] for b in out]

    again = batches(0)
    assert all(torch.equal(a, b) for a, b in zip(batches(0), again))  # seeded: resumable
    assert not all(torch.equal(a, b) for a, b in zip(batches(1), again))  # a new epoch


@pytest.mark.slow
@needs_fashion_mnist
def test_self_train_from_tar_shards(tmp_path, pile):
    _, pattern = pile
    tiny = {"model": "resnet10t", "pretrained": "none", "epochs": 1, "batch_size": 8,
            "image_size": 32}
    config = SelfTrainConfig(
        labels_per_class=3, unlabeled=pattern, iterations=1, corruptions=False,
        teacher=tiny, pseudo_label={"threshold": 0.0, "workers": 1},
        student=tiny | {"passes": 1, "workers": 1, "shuffle_buffer": 100})
    report = self_train(config, tmp_path / "run", quiet=True)
    student = runs.read_json(tmp_path / "run" / "iter1" / "student" / runs.METRICS)
    labels = runs.read_json(next((tmp_path / "run" / "iter1").glob("*label*")) /
                            "summary.json")
    assert labels["unlabeled_images"] == 300 and labels["skipped"] == 2
    assert student["pseudo_labeled_images"] == labels["selected"]
    assert student["passes"] >= 1
    assert len(report["rows"]) >= 2
    # The run's images to label next: the last labeling's, a manifest from the run directory.
    to_label = load_manifest(tmp_path / "run" / "to-label.csv", 28, channels=1,
                             classes=labels["classes"])
    assert len(to_label) == 100 and bool((to_label.labels == -1).all())


def selected_copies(directory: Path) -> Counter:
    found = Counter()
    for path in selected_shards(directory):
        for sample in tarfile_samples([{"url": str(path)}]):
            label = json.loads(sample["json"])
            found[label["index"]] += label["copies"]
    return found


@pytest.mark.slow
@needs_fashion_mnist
def test_two_processes_label_tar_shards_as_one(tmp_path, tiny_teacher, pile):
    """Each rank labels a contiguous block of shards; selection and the selected shards are those
    of one process."""
    _, pattern = pile
    pseudo_label(tiny_teacher, tmp_path / "one", LABEL, unlabeled=pattern, quiet=True)
    torchrun("pseudo-label", "--teacher", str(tiny_teacher), "--out", str(tmp_path / "two"),
             "--unlabeled", pattern, "--threshold", str(LABEL.threshold), "--per-class", "40",
             "--precision", "fp32", "--workers", "2", "--quiet")
    assert [p.name for p in label_parts(tmp_path / "two")] == [
        "labels-00000-00000.safetensors", "labels-00000-00001.safetensors",
        "labels-00001-00002.safetensors", "labels-00001-00003.safetensors"]
    index1, targets1, summary1 = read_pseudo_labels(tmp_path / "one")
    index2, targets2, summary2 = read_pseudo_labels(tmp_path / "two")
    assert torch.equal(index1, index2)
    torch.testing.assert_close(targets1.dense(), targets2.dense())
    assert summary2["skipped"] == 2 and summary2["selected_shards"].keys() == {
        "selected-00000-00000.tar", "selected-00000-00001.tar", "selected-00001-00002.tar",
        "selected-00001-00003.tar"}
    assert selected_copies(tmp_path / "one") == selected_copies(tmp_path / "two")
