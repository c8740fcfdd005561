"""torchrun with 2 CPU processes (gloo): DDP training with rank-0-only files and --resume,
feature distillation, and sharded pseudo-labeling equal to a single process; plus the streamed
.npy unlabeled source."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from noisystudent.core import runs
from noisystudent.core.config import PseudoLabelConfig
from noisystudent.core.errors import UserError
from noisystudent.data.arrays import NpyImages, pack_folder
from noisystudent.labels.directory import read_pseudo_labels
from noisystudent.stages.pseudo_label import pseudo_label

from .conftest import needs_fashion_mnist


def torchrun(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", "-m", "noisystudent", *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
@needs_fashion_mnist
def test_two_process_training_writes_once_and_resumes(tmp_path):
    run = tmp_path / "run"
    settings = ["--out", str(run), "--model", "resnet10t", "--pretrained", "none",
                "--labels-per-class", "4", "--epochs", "2", "--batch-size", "8",
                "--image-size", "32", "--quiet"]
    result = torchrun("train", *settings)
    assert result.stdout.count("test top-1") == 1  # rank 0 speaks, rank 1 is silent
    epochs = [r["epoch"] for r in runs.read_jsonl(run / runs.METRICS_LOG)]
    assert epochs == [1, 2]  # one line per epoch, not one per rank
    first = runs.read_json(run / runs.METRICS)
    assert runs.load_checkpoint(run / runs.CHECKPOINT)["epoch"] == 2

    # --resume under DDP: as if killed after the last checkpoint, before the final files.
    (run / runs.METRICS).unlink()
    (run / runs.MODEL).unlink()
    torchrun("train", "--out", str(run), "--resume", "--quiet")
    assert runs.read_json(run / runs.METRICS)["test_top1"] == first["test_top1"]
    assert not list(run.glob(f".*{runs.TMP_SUFFIX}"))


@pytest.mark.slow
@needs_fashion_mnist
def test_two_process_feature_distillation(tmp_path, tiny_teacher):
    """The student and its feature projection train inside one DDP-wrapped module (the
    student a small-image airbench net on one channel, its stem whitened from the labeled
    images in each process alike, the teacher an RGB resnet10t)."""
    run = tmp_path / "student"
    result = torchrun("distill", "--teacher", str(tiny_teacher), "--out", str(run),
                      "--model", "cifar_airbench_s", "--in-chans", "1", "--pretrained", "none",
                      "--drop-path-rate", "0", "--labels-per-class", "4", "--epochs", "2",
                      "--steps-per-epoch", "2", "--batch-size", "8", "--feature-weight", "0.5",
                      "--quiet")
    assert result.stdout.count("test top-1") == 1
    logged = runs.read_jsonl(run / runs.METRICS_LOG)
    assert [r["epoch"] for r in logged] == [1, 2] and all(r["feature"] > 0 for r in logged)
    state = runs.load_checkpoint(run / runs.CHECKPOINT)["model"]
    assert state["projection.weight"].shape == (512, 128)  # student 128 -> teacher 512
    deployed = runs.load_weights(run / runs.MODEL)
    assert "fc.weight" in deployed and not any("projection" in k for k in deployed)


def same_labels(one, two) -> None:
    index1, targets1, summary1 = read_pseudo_labels(one)
    index2, targets2, summary2 = read_pseudo_labels(two)
    assert torch.equal(index1, index2)
    torch.testing.assert_close(targets1.dense(), targets2.dense())
    assert summary2["count_per_class"] == summary1["count_per_class"]
    assert summary2["pseudo_label_accuracy"] == pytest.approx(summary1["pseudo_label_accuracy"])


LABEL_701 = ["--max-images", "701", "--threshold", "0", "--precision", "fp32", "--per-class", "60",
             "--quiet"]
ONE_PROCESS_701 = PseudoLabelConfig(max_images=701, threshold=0, precision="fp32", per_class=60)


@pytest.mark.slow
@needs_fashion_mnist
def test_two_process_pseudo_labels_equal_single_process(tmp_path, tiny_teacher):
    # 701 images: uneven shares; 60 per class: full classes cut and rare ones duplicated.
    pseudo_label(tiny_teacher, tmp_path / "one", ONE_PROCESS_701, quiet=True)
    torchrun("pseudo-label", "--teacher", str(tiny_teacher), "--out", str(tmp_path / "two"),
             *LABEL_701)
    assert sorted(p.name for p in (tmp_path / "two").glob("labels-*")) == \
        ["labels-00000-00000.safetensors", "labels-00001-00000.safetensors"]
    same_labels(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
@needs_fashion_mnist
def test_two_nodes_through_a_c10d_rendezvous_label_as_one_process(tmp_path, tiny_teacher):
    """Two single-process "nodes" (two torchrun agents) meet through a c10d rendezvous on
    127.0.0.1, as the several-machine command in docs/scaling.md does, and give one process's
    labels."""
    pseudo_label(tiny_teacher, tmp_path / "one", ONE_PROCESS_701, quiet=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
            "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=labels",
            "-m", "noisystudent", "pseudo-label", "--teacher", str(tiny_teacher),
            "--out", str(tmp_path / "nodes"), *LABEL_701]
    nodes = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for node in nodes:
        _, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-3000:]
    assert len(list((tmp_path / "nodes").glob("labels-*"))) == 2  # one share per node
    same_labels(tmp_path / "one", tmp_path / "nodes")


def test_npy_images_stream_rows_and_views(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (50, 3, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "a.npy", array)
    images = NpyImages(tmp_path / "a.npy")
    assert images.shape == (50, 3, 4, 4)
    assert np.array_equal(images.read(torch.tensor([7, 8, 9, 2, 2])).numpy(),
                          array[[7, 8, 9, 2, 2]])
    view = images[10:30][torch.tensor([0, 19, 19])]  # views compose, nothing is read yet
    assert len(view) == 3 and np.array_equal(view.read().numpy(), array[[10, 29, 29]])
    share = images[10:40][5:25:2]  # slices of slices stay a range: no N-long index is made
    assert isinstance(share.rows, range) and len(share) == 10
    assert np.array_equal(share.read().numpy(), array[15:35:2])
    assert np.array_equal(share.read(torch.tensor([9, 0])).numpy(), array[[33, 15]])
    np.save(tmp_path / "f.npy", array.astype(np.float32))
    with pytest.raises(UserError, match="expected uint8 images"):
        NpyImages(tmp_path / "f.npy")
    (tmp_path / "t.npy").write_bytes((tmp_path / "a.npy").read_bytes()[:-5])
    with pytest.raises(UserError, match="truncated"):
        NpyImages(tmp_path / "t.npy")


def test_pack_folder_decodes_once_and_skips_broken_files(tmp_path):
    for i, color in enumerate((10, 200)):
        Image.new("L", (9, 7), color).save(tmp_path / f"{i}.png")
    (tmp_path / "broken.jpg").write_text("not an image")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        result = pack_folder(tmp_path, tmp_path / "out" / "u.npy", size=4, channels=1)
    assert result["images"] == 2 and result["skipped"] == 1
    packed = np.load(tmp_path / "out" / "u.npy")
    assert packed.shape == (2, 1, 4, 4) and packed[0].max() == 10 and packed[1].min() == 200


@needs_fashion_mnist
def test_pseudo_label_from_a_streamed_npy(tmp_path, tiny_teacher):
    info = json.loads((tiny_teacher / runs.MODEL_INFO).read_text())
    from noisystudent.data.fashion_mnist import load_fashion_mnist

    images = load_fashion_mnist("test").images[:120].numpy()
    assert images.shape[1:] == (info["stored_channels"], info["stored_size"],
                                info["stored_size"])
    np.save(tmp_path / "u.npy", images)
    summary = pseudo_label(tiny_teacher, tmp_path / "labels",
                           PseudoLabelConfig(threshold=0.0, balance=False),
                           unlabeled=str(tmp_path / "u.npy"), quiet=True)
    assert summary["unlabeled_images"] == 120 and summary["selected"] == 120
    np.save(tmp_path / "rgb.npy", np.repeat(images, 3, axis=1))
    with pytest.raises(UserError, match="pack it with --image-size"):
        pseudo_label(tiny_teacher, tmp_path / "x", PseudoLabelConfig(),
                     unlabeled=str(tmp_path / "rgb.npy"), quiet=True)


def test_one_process_torchrun_goes_through_the_collectives(monkeypatch):
    """A torchrun launch of one process joins the group, so one GPU exercises every collective
    that many would (before, WORLD_SIZE=1 skipped them all)."""
    import socket

    import torch.distributed as dist

    from noisystudent.core import distributed
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0",
                           WORLD_SIZE="1", LOCAL_RANK="0", TORCHELASTIC_RUN_ID="test").items():
        monkeypatch.setenv(key, value)
    calls = []
    for name in ("all_gather", "all_reduce"):
        real = getattr(dist, name)
        monkeypatch.setattr(dist, name, lambda *a, _real=real, _name=name, **k:
                            (calls.append(_name), _real(*a, **k))[1])
    distributed.setup()
    try:
        assert distributed.active() and distributed.world_size() == 1
        rows = torch.arange(12.0).view(6, 2)
        assert torch.equal(distributed.gather_rows(rows), rows)
        assert distributed.mean_metrics({"loss": 2.0, "images_per_s": 10.0}) == \
            {"loss": 2.0, "images_per_s": 10.0}
        model = distributed.wrap(torch.nn.Linear(2, 2), torch.device("cpu"))
        assert isinstance(model, torch.nn.parallel.DistributedDataParallel)
        distributed.barrier()
    finally:
        distributed.teardown()
    assert calls == ["all_gather", "all_gather", "all_reduce"]


def test_collective_tensors_live_on_the_backends_device(monkeypatch):
    import torch.distributed as dist

    from noisystudent.core import distributed
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(dist, "get_backend", lambda: "nccl")
    assert distributed.collective_device() == torch.device("cuda", 3)
    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    assert distributed.collective_device() == torch.device("cpu")
