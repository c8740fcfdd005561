"""Crash-safe and input-safe: kill -9 and resume, torn and corrupt files, a full disk, a NaN
loss, pickle payloads and hostile inputs. Each guarantee in docs/reliability.md is a test here.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from noisystudent.core import runs
from noisystudent.core.config import (
    DistillConfig,
    PseudoLabelConfig,
    SelfTrainConfig,
    StudentConfig,
)
from noisystudent.core.errors import CorruptFile, UserError
from noisystudent.core.settings_io import load_config
from noisystudent.data.images import load_image_folder
from noisystudent.data.sources import load_run_data
from noisystudent.data.unlabeled import teacher_run_unlabeled
from noisystudent.labels.directory import pseudo_labels_complete, read_pseudo_labels
from noisystudent.models.transforms import InputSpec
from noisystudent.stages.distill import distill
from noisystudent.stages.pseudo_label import pseudo_label
from noisystudent.stages.stage import open_run
from noisystudent.stages.student import train_student
from noisystudent.stages.train import train
from noisystudent.training import tasks

from .conftest import needs_fashion_mnist, quick_config

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


# ------------------------------------------------------------------ kill -9 at any moment


def _self_train(out: Path, resume: bool, env: dict, log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "noisystudent", "self-train", str(SMOKE), "--out", str(out),
            "--quiet"] + (["--resume"] if resume else [])
    with open(log, "a") as stderr:  # the child keeps its own handle; ours closes here
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr)


def _finished_work(run: Path) -> dict[Path, int]:
    """Files that mark finished steps and pseudo-labeling passes, with their mtimes."""
    marks = []
    for metrics in run.rglob(runs.METRICS):
        marks += [metrics, metrics.parent / runs.MODEL]
    for summary in run.rglob("pseudo-labels/summary.json"):
        marks += list(summary.parent.iterdir())
    return {p: p.stat().st_mtime_ns for p in marks if not p.name.startswith(".")}


def _kill_when(proc: subprocess.Popen, condition, timeout: float) -> bool:
    """SIGKILL once condition() holds or timeout passes; True when the condition fired."""
    deadline, fired = time.monotonic() + timeout, False
    while proc.poll() is None and time.monotonic() < deadline and not (fired := condition()):
        time.sleep(0.001)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return fired


@pytest.mark.slow
@needs_fashion_mnist
def test_kill_9_at_random_moments_then_resume_matches_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "NOISYSTUDENT_CACHE": str(tmp_path / "cache")}
    log = tmp_path / "stderr.log"
    start = time.monotonic()
    whole = _self_train(tmp_path / "whole", False, env, log)
    assert whole.wait(timeout=600) == 0, log.read_text()
    duration = time.monotonic() - start
    expected = json.loads((tmp_path / "whole" / "report.json").read_text())

    run = tmp_path / "killed"
    rng = random.Random(2026)
    moments = sorted(rng.uniform(3.0, duration) for _ in range(3))
    print("kill -9 after", [f"{m:.1f}s" for m in moments], "and during a checkpoint write")
    done: dict[Path, int] = {}
    conditions = [lambda: False] * len(moments)
    # One kill lands while a temporary file exists: mid-write of a checkpoint or weights.
    conditions.insert(1, lambda: any(run.rglob(f".*{runs.TMP_SUFFIX}")))
    moments.insert(1, duration)
    for moment, condition in zip(moments, conditions):
        proc = _self_train(run, (run / runs.CONFIG).is_file(), env, log)
        if _kill_when(proc, condition, moment):
            print("killed with", [p.name for p in run.rglob(f".*{runs.TMP_SUFFIX}")])
        finished = _finished_work(run)
        assert all(finished[p] == t for p, t in done.items()), "finished work was redone"
        done = finished
    proc = _self_train(run, (run / runs.CONFIG).is_file(), env, log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-2000:]
    assert all(p.stat().st_mtime_ns == t for p, t in done.items()), "finished work was redone"
    report = json.loads((run / "report.json").read_text())
    final, reference = report["rows"][-1]["test_top1"], expected["rows"][-1]["test_top1"]
    assert abs(final - reference) <= 0.003
    assert not list(run.rglob(f".*{runs.TMP_SUFFIX}"))


# ------------------------------------------------------------------ torn and corrupt files


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_torn_or_corrupt_checkpoint_is_detected(tmp_path):
    path = tmp_path / runs.CHECKPOINT
    runs.save_checkpoint(path, {"model": {"w": torch.randn(64)}, "epoch": 3})
    assert runs.load_checkpoint(path)["epoch"] == 3
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # torn: a write cut short
    with pytest.raises(CorruptFile, match="does not match its checksum"):
        runs.load_checkpoint(path)
    path.write_bytes(whole)
    _flip_last_byte(path)  # bit rot
    with pytest.raises(CorruptFile, match="does not match its checksum"):
        runs.load_checkpoint(path)


def test_torn_or_corrupt_weights_are_detected(tmp_path):
    path = tmp_path / runs.MODEL
    runs.save_weights(path, {"w": torch.randn(64), "b": torch.zeros(3, dtype=torch.bfloat16)})
    whole = path.read_bytes()
    _flip_last_byte(path)
    with pytest.raises(CorruptFile, match="do not match their checksum"):
        runs.load_weights(path)
    path.write_bytes(whole[:-10])
    with pytest.raises(CorruptFile, match="not a readable safetensors"):
        runs.load_weights(path)


@pytest.mark.slow
@needs_fashion_mnist
def test_resume_from_a_corrupt_checkpoint_starts_the_step_over(tmp_path):
    config = quick_config(epochs=2, labels_per_class=2)
    train(config, tmp_path / "whole", quiet=True)
    cut = tmp_path / "cut"
    train(config, cut, quiet=True)
    (cut / runs.METRICS).unlink()  # as if killed after the last epoch
    _flip_last_byte(cut / runs.CHECKPOINT)
    with pytest.warns(UserWarning, match="this step starts over"):
        train(None, cut, resume=True, quiet=True)
    assert (cut / (runs.CHECKPOINT + ".corrupt")).is_file()
    whole, redone = runs.load_weights(tmp_path / "whole" / runs.MODEL), \
        runs.load_weights(cut / runs.MODEL)
    for key in whole:
        torch.testing.assert_close(redone[key], whole[key], msg=key)


@needs_fashion_mnist
def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real_fsync = os.fsync
    writes = {"n": 0}

    def fsync_then_full_disk(fd):
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{runs.CHECKPOINT}"):
            writes["n"] += 1
            if writes["n"] == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(runs.os, "fsync", fsync_then_full_disk)
    run = tmp_path / "run"
    with pytest.raises(UserError, match=r"could not write .*checkpoint.pt \(No space left on "
                                        r"device\); the previous checkpoint.pt, if any, is unch"):
        train(quick_config(epochs=3, labels_per_class=2), run, quiet=True)
    assert runs.load_checkpoint(run / runs.CHECKPOINT)["epoch"] == 1
    assert not list(run.glob(f".*{runs.TMP_SUFFIX}"))
    monkeypatch.setattr(runs.os, "fsync", real_fsync)
    assert train(None, run, resume=True, quiet=True)["epochs"] == 3


@needs_fashion_mnist
def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    real_forward, calls = tasks.SupervisedTask.forward, {"n": 0}

    def nan_on_step_7(self, batch):
        calls["n"] += 1
        out = real_forward(self, batch)
        if calls["n"] == 7:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(tasks.SupervisedTask, "forward", nan_on_step_7)
    run = tmp_path / "run"
    config = quick_config(epochs=3, labels_per_class=4, batch_size=8)  # 5 steps per epoch
    with pytest.raises(UserError, match=r"loss became nan at step 7 \(epoch 2\); training "
                                        r"stopped and the checkpoint of epoch 1 is kept"):
        train(config, run, quiet=True)
    assert runs.load_checkpoint(run / runs.CHECKPOINT)["epoch"] == 1
    assert not (run / runs.MODEL).exists()


class NanFromStep(tasks.SupervisedTask):
    """A task whose loss turns NaN from a given step on."""

    def __init__(self, model, nan_from: int):
        spec = InputSpec(8, (0.5,) * 3, (0.5,) * 3)
        super().__init__(model, lambda x: x, spec)
        self.nan_from, self.calls = nan_from, 0

    def forward(self, batch):
        self.calls += 1
        out = super().forward(batch)
        if self.calls >= self.nan_from:
            out["loss"] = out["loss"] * float("nan")
        return out


def _steps_of(task, steps: int):
    from noisystudent.data.loaders import ImageBatches
    from noisystudent.training.engine import train_one_epoch
    from noisystudent.training.optim import make_optimizer

    images = torch.randint(0, 256, (64, 3, 8, 8), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    loader = ImageBatches.training(images, torch.arange(64) % 3, 8, torch.device("cpu"),
                                   seed=0, steps=steps)
    groups = [{"params": list(task.trainable_module.parameters())}]
    optimizer = make_optimizer("adamw", groups, lr=0.1, momentum=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return train_one_epoch(task, loader, optimizer, scheduler, device=torch.device("cpu"),
                           dtype=None, progress=False)


def test_no_update_from_a_non_finite_loss_and_the_epoch_names_its_first_step():
    """The loop reads the loss once per epoch; a NaN still never reaches the weights."""
    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))

    reference, broken = model(), model()
    _steps_of(NanFromStep(reference, nan_from=100), steps=3)  # 3 good steps
    with pytest.raises(UserError, match="loss became nan at step 4"):
        _steps_of(NanFromStep(broken, nan_from=4), steps=8)   # 3 good steps, then 5 NaN ones
    for mine, theirs in zip(broken.parameters(), reference.parameters()):
        assert torch.equal(mine, theirs)


@needs_fashion_mnist
def test_torn_pseudo_labels_are_never_used(tmp_path, tiny_teacher):
    out = tmp_path / "labels"
    pseudo_label(tiny_teacher, out, PseudoLabelConfig(max_images=100, threshold=0.0),
                 quiet=True)
    assert pseudo_labels_complete(out)
    for name in ("labels-00000-00000.safetensors", "selected-00000-00000.safetensors"):
        _flip_last_byte(out / name)
        assert not pseudo_labels_complete(out)
        with pytest.raises(CorruptFile, match=f"{name} is corrupt"):
            read_pseudo_labels(out)
        _flip_last_byte(out / name)  # flipped back: whole again
        assert pseudo_labels_complete(out)


# ------------------------------------------------------------------ untrusted files


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_payloads_never_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / runs.CHECKPOINT
    torch.save({"model": _Payload(marker), "epoch": 1}, evil)
    with pytest.raises(CorruptFile, match="not a noisystudent checkpoint"):
        runs.load_checkpoint(evil)
    # Even with a forged, valid checksum header, weights_only=True refuses the payload.
    payload = pickle.dumps({"model": _Payload(marker)}, protocol=2)
    runs.atomic_write(evil, lambda tmp: tmp.write_bytes(
        runs.CHECKPOINT_MAGIC + hashlib.sha256(payload).hexdigest().encode()
        + b"\n" + payload))
    with pytest.raises(CorruptFile, match="could not be loaded safely"):
        runs.load_checkpoint(evil)
    # As weights: .pt / .pth are refused by name, before anything is read.
    from noisystudent.models.build import create_model
    for suffix in (".pt", ".pth"):
        torch.save({"w": _Payload(marker)}, tmp_path / f"w{suffix}")
        with pytest.raises(UserError, match="only .safetensors"):
            create_model("resnet10t", 10, pretrained=str(tmp_path / f"w{suffix}"))
    assert not marker.exists()


# ------------------------------------------------------------------ hostile and odd inputs


def test_empty_class_folder_is_a_one_line_error(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "img.png")
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    (tmp_path / "img.png").rename(tmp_path / "cat" / "img.png")
    with pytest.raises(UserError, match="class folder.s. dog in .* hold no images"):
        load_image_folder(tmp_path, size=8)


@needs_fashion_mnist
def test_teacher_classes_must_match_the_data(tmp_path, tiny_teacher, image_tree):
    train_dir, _ = image_tree
    with pytest.raises(UserError, match="teacher classes .* differ"):
        distill(DistillConfig(teacher=str(tiny_teacher), data=str(train_dir),
                              model="resnet10t", pretrained="none", labels_per_class=2,
                              image_size=32), tmp_path / "d", quiet=True)
    labels = tmp_path / "labels"
    pseudo_label(tiny_teacher, labels, PseudoLabelConfig(max_images=50, threshold=0.0),
                 quiet=True)
    config = StudentConfig(pseudo_labels=str(labels), data=str(train_dir), model="resnet10t",
                           pretrained="none", labels_per_class=2, image_size=32)
    unlabeled, _ = teacher_run_unlabeled(tiny_teacher, max_images=50)
    with pytest.raises(UserError, match="pseudo-labels' classes .* differ"):
        train_student(config, tmp_path / "s", data=load_run_data(config, 32),
                      unlabeled=unlabeled, quiet=True)


def test_a_start_killed_while_writing_its_config_leaves_no_temporary(tmp_path):
    """Killed mid-write of config.yaml, a stage has no config to resume from: the next run
    starts it afresh and clears the torn temporary (kill -9 at random moments found it)."""
    run = tmp_path / "teacher"
    run.mkdir()
    torn = run / f".config.yaml.4242{runs.TMP_SUFFIX}"
    torn.write_text("model: res")
    open_run(quick_config(), run, False)
    assert not torn.exists() and (run / runs.CONFIG).is_file()


# ------------------------------------------------------------------ one process per run


def test_a_run_in_use_is_locked_until_its_process_ends(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from noisystudent.core import runs; "
         "runs.lock_run(sys.argv[1]); print('held', flush=True); time.sleep(120)", str(run)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"in use by process {holder.pid};"):
            open_run(quick_config(), run, False)
        assert not (run / runs.CONFIG).exists()
    finally:
        holder.kill()  # a crash: the kernel drops the lock with the process
        holder.wait()
    open_run(quick_config(), run, False)
    runs.lock_run(run)  # the same process again: no-op
    runs.unlock_run(run)


def test_a_run_that_failed_before_doing_work_starts_again_after_a_fix(tmp_path):
    run = tmp_path / "run"
    open_run(quick_config(labels_per_class=7), run, False)  # then its split failed, say
    (run / runs.SPLITS).write_text("{}")
    runs.unlock_run(run)
    _, config = open_run(quick_config(labels_per_class=3), run, False)
    assert config.labels_per_class == 3 and not (run / runs.SPLITS).exists()
    assert runs.read_yaml(run / runs.CONFIG)["labels_per_class"] == 3
    runs.unlock_run(run)
    (run / runs.CHECKPOINT).write_bytes(b"work")  # once a step has done work: --resume only
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        open_run(quick_config(), run, False)
    runs.unlock_run(run)


@needs_fashion_mnist
def test_a_self_train_stopped_by_its_split_reruns_after_the_fix(tmp_path, capsys):
    from noisystudent.cli import main

    run = str(tmp_path / "run")
    assert main(["self-train", str(SMOKE), "--labels-per-class", "7000", "--out", run,
                 "--quiet"]) == 2
    assert "7000 are needed" in capsys.readouterr().err
    _, fixed = open_run(load_config(SelfTrainConfig, str(SMOKE)), run, False, SelfTrainConfig)
    assert fixed.labels_per_class == 10
    assert not (tmp_path / "run" / "iter0-teacher" / runs.CONFIG).exists()
    runs.unlock_run(run)
