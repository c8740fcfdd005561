"""The images to label next: least margin, the classes taking turns, streamed over the label
parts; written as files beside to-label.csv, which reads back as a manifest; once filled in,
``extra_labeled`` adds its images to the labeled split."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
from PIL import Image

from noisystudent.core import runs
from noisystudent.core.config import PseudoLabelConfig
from noisystudent.core.errors import UserError
from noisystudent.data.fashion_mnist import load_fashion_mnist
from noisystudent.data.images import load_manifest
from noisystudent.data.splits import load_split
from noisystudent.data.unlabeled import teacher_run_unlabeled
from noisystudent.labels import to_label
from noisystudent.labels.selection import Part
from noisystudent.labels.to_label import TO_LABEL_CSV, LowestMargins, margins
from noisystudent.stages.pseudo_label import pseudo_label
from noisystudent.stages.train import train

from .conftest import needs_fashion_mnist, quick_config
from .test_shards import write_shards


def part(probs: torch.Tensor, start: int = 0) -> Part:
    confidence, predicted = probs.max(1)
    stored = {"probs": probs.half(), "confidence": confidence, "predicted": predicted}
    return Part(start, confidence, predicted, None, stored)


def read_rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_margins_from_full_top_k_and_one_hot_labels():
    full = {"probs": torch.tensor([[0.1, 0.6, 0.3], [0.4, 0.2, 0.4]])}  # class order
    torch.testing.assert_close(margins(full), torch.tensor([0.3, 0.0]))
    top_2 = {"probs": torch.tensor([[0.6, 0.3]])}  # top-k: sorted
    torch.testing.assert_close(margins(top_2), torch.tensor([0.3]))
    one_hot = {"probs": torch.ones(2, 1), "confidence": torch.tensor([0.9, 0.5])}
    torch.testing.assert_close(margins(one_hot), torch.tensor([0.9, 0.5]))


def test_the_classes_take_turns_lowest_margin_first_and_streaming_changes_nothing():
    probs = torch.rand(1000, 5, generator=torch.Generator().manual_seed(0)) ** 4
    probs = probs / probs.sum(1, keepdim=True)
    whole = LowestMargins(8)
    whole.add(part(probs))
    streamed = LowestMargins(8)
    for start in range(0, 1000, 137):
        streamed.add(part(probs[start:start + 137], start))
    chosen = whole.chosen(12)
    assert torch.equal(chosen["index"], streamed.chosen(12)["index"])

    # The reference: each class's images by (margin, index); the classes take turns.
    margin, predicted = margins(part(probs).stored), probs.argmax(1)
    ranked = {c: sorted(np.flatnonzero(predicted == c).tolist(),
                        key=lambda i: (float(margin[i]), i)) for c in range(5)}
    expected = [ranked[c][turn] for turn in range(3) for c in range(5)][:12]
    assert chosen["index"].tolist() == expected
    assert torch.bincount(chosen["predicted"], minlength=5).tolist() == [3, 3, 2, 2, 2]


@needs_fashion_mnist
def test_pseudo_label_writes_the_images_to_label_next_as_a_manifest(tmp_path, tiny_teacher):
    config = PseudoLabelConfig(max_images=300, threshold=0.0, to_label=20)
    summary = pseudo_label(tiny_teacher, tmp_path / "labels", config, quiet=True)
    assert summary["to_label"] == 20
    rows = read_rows(tmp_path / "labels" / TO_LABEL_CSV)
    assert len(rows) == 20 and all(row["label"] == "" for row in rows)
    assert list(rows[0]) == ["path", "label", "guess", "confidence", "margin", "source"]
    assert len({row["guess"] for row in rows}) >= 2  # spread over the predicted classes
    classes = summary["classes"]
    listed = load_manifest(tmp_path / "labels" / TO_LABEL_CSV, 28, channels=1, classes=classes)
    assert len(listed) == 20 and bool((listed.labels == -1).all())
    # The files hold the unlabeled images' own pixels.
    images, _ = teacher_run_unlabeled(tiny_teacher, max_images=300)
    first = int(rows[0]["source"].split()[-1])
    assert torch.equal(listed.images[0], images.images[first])

    # Filled in with the hidden true labels, the CSV adds 20 labeled images to a run's split.
    truth = load_fashion_mnist("train").labels[
        torch.as_tensor(load_split(tiny_teacher / runs.SPLITS)["unlabeled"])]
    for row in rows:
        row["label"] = classes[int(truth[int(row["source"].split()[-1])])]
    rows[-1]["label"] = ""  # not labeled yet: left out, counted
    filled = tmp_path / "labels" / "filled.csv"
    with open(filled, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    run = tmp_path / "more"
    train(quick_config(labels_per_class=3, extra_labeled=[str(filled)]), run, quiet=True)
    split = load_split(run / runs.SPLITS)
    pool = len(load_fashion_mnist("train"))
    assert len(split["labeled"]) == 3 * 10 - len(split["val"]) + 19
    assert split["labeled"][-19:].tolist() == list(range(pool, pool + 19))

    with open(filled, "w", encoding="utf-8") as stream:
        stream.write("path,label\n" + rows[0]["path"] + ",\n")
    with pytest.raises(UserError, match="has no labeled row; fill in the label column"):
        train(quick_config(labels_per_class=3, extra_labeled=[str(filled)]),
              tmp_path / "none", quiet=True)


@needs_fashion_mnist
def test_images_from_tar_shards_are_written_out_as_files(tmp_path, tiny_teacher):
    images, _ = teacher_run_unlabeled(tiny_teacher, max_images=300)
    pattern = write_shards(tmp_path / "shards", images.images, broken=False)
    config = PseudoLabelConfig(threshold=0.0, to_label=10, workers=1)
    pseudo_label(tiny_teacher, tmp_path / "labels", config, unlabeled=pattern, quiet=True)
    rows = read_rows(tmp_path / "labels" / TO_LABEL_CSV)
    assert len(rows) == 10
    for row in rows:
        assert ".tar:" in row["source"]  # the member it came from
        picture = Image.open(io.BytesIO((tmp_path / "labels" / row["path"]).read_bytes()))
        assert picture.size == (28, 28)


def test_the_second_guess_is_never_the_predicted_class_where_stored_probabilities_tie():
    # Stored in fp16, two probabilities can round to a tie; the predicted class (from the
    # float logits) may be either of them, and the second guess must be the other.
    tied = {"probs": torch.tensor([[0.4, 0.4, 0.2]], dtype=torch.float16)}
    second, confidence = to_label.second_guesses(tied, torch.tensor([1]))
    assert second.tolist() == [0] and confidence.item() == pytest.approx(0.4, abs=1e-3)
    top_k = {**tied, "classes": torch.tensor([[7, 2, 5]], dtype=torch.int16)}
    second, _ = to_label.second_guesses(top_k, torch.tensor([2]))
    assert second.tolist() == [7]
    one = {"probs": torch.ones(2, 1, dtype=torch.float16)}
    assert to_label.second_guesses(one, torch.tensor([3, 4]))[0].tolist() == [-1, -1]
