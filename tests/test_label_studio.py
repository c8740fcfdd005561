"""The images to label next through Label Studio, checked with Label Studio's own library
(label-studio-sdk): the import file's tasks and pre-annotations fit the labeling interface
written beside them, and an export built from the SDK's annotation objects reads back as
labeled images (tasks without a choice skipped and counted)."""

from __future__ import annotations

import json

import pytest
import torch

from noisystudent.core import runs
from noisystudent.core.config import PseudoLabelConfig
from noisystudent.core.errors import UserError
from noisystudent.data.fashion_mnist import load_fashion_mnist
from noisystudent.data.label_studio import IMPORT_FILE, INTERFACE_FILE, local_path
from noisystudent.data.sources import load_extra_labeled
from noisystudent.data.splits import load_split
from noisystudent.labels.to_label import TO_LABEL_CSV
from noisystudent.stages.pseudo_label import pseudo_label
from noisystudent.stages.train import train

from .conftest import needs_fashion_mnist, quick_config
from .test_to_label import read_rows

pytest.importorskip("label_studio_sdk")
from label_studio_sdk.label_interface import LabelInterface  # noqa: E402
from label_studio_sdk.label_interface.objects import AnnotationValue, TaskValue  # noqa: E402


@pytest.fixture(scope="module")
def to_label(tiny_teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("ls") / "labels"
    config = PseudoLabelConfig(max_images=300, threshold=0.0, to_label=12)
    summary = pseudo_label(tiny_teacher, out, config, quiet=True)
    return out, summary["classes"]


@needs_fashion_mnist
def test_the_import_file_fits_label_studio(to_label):
    out, classes = to_label
    interface = LabelInterface((out / INTERFACE_FILE).read_text())
    assert interface.get_control("label").labels == classes
    tasks = json.loads((out / IMPORT_FILE).read_text())
    rows = read_rows(out / TO_LABEL_CSV)
    assert len(tasks) == len(rows) == 12
    for task, row in zip(tasks, rows):
        TaskValue.model_validate(task)  # the SDK's own model of a task
        assert interface.validate_task({"data": task["data"]})  # the image variable is there
        for prediction in task["predictions"]:
            assert interface.validate_prediction(prediction, return_errors=True) == []
        guesses = [(p["result"][0]["value"]["choices"][0], p["score"])
                   for p in task["predictions"]]
        assert guesses[0] == (row["guess"], pytest.approx(float(row["confidence"]), abs=1e-4))
        assert len(guesses) == 2 and guesses[1][0] != guesses[0][0]
        assert guesses[0][1] - guesses[1][1] == pytest.approx(float(row["margin"]), abs=2e-3)
        # The image is served from the folder holding the import file, and is on disk there.
        assert local_path(task["data"]["image"]) == row["path"]
        assert (out / row["path"]).is_file() and task["data"]["file"] == \
            str((out / row["path"]).resolve())


@needs_fashion_mnist
def test_an_export_reads_back_as_labeled_images(to_label, tiny_teacher, tmp_path):
    out, classes = to_label
    interface = LabelInterface((out / INTERFACE_FILE).read_text())
    tasks = json.loads((out / IMPORT_FILE).read_text())
    truth = load_fashion_mnist("train").labels[
        torch.as_tensor(load_split(tiny_teacher / runs.SPLITS)["unlabeled"])]
    rows = read_rows(out / TO_LABEL_CSV)
    exported = []
    for number, (task, row) in enumerate(zip(tasks, rows), 1):
        label = classes[int(truth[int(row["source"].split()[-1])])]
        chosen = interface.get_control("label").label([label])
        annotations = [AnnotationValue(completed_by=1, result=[chosen]).model_dump()]
        if number == 1:  # not labeled yet
            annotations = []
        if number == 2:  # skipped by the annotator
            annotations[0]["was_cancelled"] = True
        for annotation in annotations:
            assert interface.validate_annotation(annotation)
        exported.append({"id": number, "data": task["data"], "annotations": annotations,
                         "predictions": task["predictions"]})
    export = tmp_path / "project-1-at-2026-12-05.json"  # downloaded elsewhere: paths hold
    export.write_text(json.dumps(exported))

    from noisystudent.data.sources import load_run_data

    pool = load_run_data(quick_config(labels_per_class=3), 28).train
    added = load_extra_labeled(str(export), pool, strict=False)
    assert len(added) == 10 and added.classes == classes
    expected = [int(truth[int(row["source"].split()[-1])]) for row in rows[2:]]
    assert added.labels.tolist() == expected

    run = tmp_path / "more"
    train(quick_config(labels_per_class=3, extra_labeled=[str(export)]), run, quiet=True)
    assert len(load_split(run / runs.SPLITS)["labeled"]) >= 10

    exported[3]["annotations"][0]["result"][0]["value"]["choices"] = ["Unicorn"]
    export.write_text(json.dumps(exported))
    with pytest.raises(UserError, match="label 'Unicorn' is not one of the classes"):
        load_extra_labeled(str(export), pool, strict=False)
    export.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(UserError, match="not a Label Studio JSON export"):
        load_extra_labeled(str(export), pool, strict=False)
