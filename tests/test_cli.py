"""The command line: help that teaches, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from noisystudent.cli import main

from .conftest import needs_fashion_mnist


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "noisystudent", *args], capture_output=True,
                          text=True, timeout=300)


def test_help_lists_the_options():
    result = run_cli("train", "--help")
    assert result.returncode == 0
    for flag in ("--labels-per-class", "--model", "--pretrained", "--epochs", "--out",
                 "--config", "--resume", "--finetune", "--layer-decay", "--ema-decay"):
        assert flag in result.stdout


def one_line_error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("noisystudent: error:") and "\n" not in err, err
    return err


@needs_fashion_mnist
@pytest.mark.parametrize("argv,message", [
    (["--model", "resnet_does_not_exist"], "unknown model"),
    (["--labels-per-class", "7000"], "7000"),
    (["--epochs", "-1"], "epochs must be in"),
    (["--data", "/nowhere/at/all"], "data not found"),
    (["--set", "no_such_key=1"], "unknown config key no_such_key"),
    (["--pretrained", "weights.pth"], "safetensors"),
])
def test_bad_train_input_is_one_line(tmp_path, capsys, argv, message):
    err = one_line_error(capsys, "train", "--out", str(tmp_path / "r"), "--model", "resnet10t",
                         "--pretrained", "none", *argv)
    assert message in err


def test_evaluate_and_predict_on_a_missing_run(tmp_path, capsys):
    assert "run directory not found" in one_line_error(capsys, "evaluate", str(tmp_path / "x"))
    assert "run directory not found" in one_line_error(capsys, "predict", str(tmp_path / "x"),
                                                       "a.png")


def test_real_process_exits_2_without_traceback(tmp_path):
    result = run_cli("train", "--out", str(tmp_path / "r"), "--config", str(tmp_path / "no.yaml"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_noisy_student_commands_fail_in_one_line(tmp_path, capsys):
    assert "run directory not found" in one_line_error(
        capsys, "pseudo-label", "--teacher", str(tmp_path / "none"), "--out", str(tmp_path / "l"))
    assert "threshold must be in" in one_line_error(
        capsys, "pseudo-label", "--teacher", "x", "--out", "y", "--threshold", "2")
    config = tmp_path / "ns.yaml"
    config.write_text("iterations: 2\nstudent:\n  epochs: 1\n  noise: 3\n")
    assert "unknown config key student.noise" in one_line_error(
        capsys, "self-train", str(config), "--out", str(tmp_path / "ns"))
    assert "nothing to resume" in one_line_error(
        capsys, "self-train", "--out", str(tmp_path / "fresh"), "--resume")
    for command in ("distill", "pseudo-label", "self-train"):
        assert subprocess.run([sys.executable, "-m", "noisystudent", command, "--help"],
                              capture_output=True, timeout=120).returncode == 0


def test_status_lines_go_to_the_logger_and_quiet_silences_them(capsys):
    import logging

    from noisystudent.cli import setup_logging

    log = logging.getLogger("noisystudent.stages.selftrain")
    setup_logging(quiet=False)
    log.info("iteration 1: pseudo-labeling")
    assert capsys.readouterr().err == "iteration 1: pseudo-labeling\n"
    setup_logging(quiet=True)
    log.info("iteration 1: pseudo-labeling")
    log.warning("skipped 2 unreadable images")
    assert capsys.readouterr().err == "skipped 2 unreadable images\n"


def test_self_train_help_lists_every_section_setting():
    result = run_cli("self-train", "--help")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    student = [line for line in lines if line.strip().startswith("--student.")]
    assert len(student) > 20
    assert "--students." not in result.stdout  # each iteration's overrides: YAML only
    for flag in ("--teacher.image-size", "--pseudo-label.threshold", "--finetune.epochs",
                 "--student.unlabeled-weight", "--print-config"):
        assert flag in result.stdout
    # Each with its help text and default.
    assert "weight of the soft cross-entropy on pseudo-labels [1.0]" in " ".join(
        " ".join(lines).split())


def test_print_config_shows_the_typed_settings_and_runs_nothing(tmp_path, capsys):
    import yaml

    assert main(["self-train", "configs/smoke.yaml", "--out", str(tmp_path / "run"),
                 "--set", "student.unlabeled_weight=2", "--student.passes", "3",
                 "--student.steps-per-epoch", "0", "--no-teacher.channels-last",
                 "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["student"]["unlabeled_weight"] == 2.0
    assert (printed["student"]["passes"], printed["student"]["steps_per_epoch"]) == (3.0, 0)
    assert printed["teacher"]["channels_last"] is False
    assert not (tmp_path / "run").exists()


def test_a_command_flushes_denormals_on_the_cpu(monkeypatch):
    """Denormals slowed a student's step 2.5x on AVX2 kernels: every command runs without."""
    import torch

    calls = []
    monkeypatch.setattr(torch, "set_flush_denormal", lambda on: calls.append(on) or True)
    assert main(["self-train", "configs/smoke.yaml", "--print-config"]) == 0
    assert calls == [True]


def test_flushed_denormals_leave_numpy_quiet():
    """NumPy computes a float type's limits on first use, and warned on every command that a
    flushed smallest subnormal is zero."""
    code = ("import warnings; warnings.simplefilter('error'); import numpy as np; "
            "from noisystudent.core.device import flush_denormals; flush_denormals(); "
            "[np.finfo(t).smallest_subnormal for t in (np.float16, np.float32, np.float64)]")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_print_config_needs_no_out_and_a_run_does(capsys):
    assert main(["self-train", "configs/smoke.yaml", "--print-config"]) == 0
    assert "labels_per_class: 10" in capsys.readouterr().out
    assert main(["self-train", "configs/smoke.yaml"]) == 2
    assert "required: --out RUN_DIR" in capsys.readouterr().err


def test_onnx_predict_parses_without_pydantic_or_torch(tmp_path):
    """An install for .onnx predictions only (onnxruntime, numpy, pillow) runs the CLI."""
    code = ("import sys; sys.modules['pydantic'] = None; sys.modules['torch'] = None; "
            "from noisystudent.cli import main; sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", code, "predict", str(tmp_path / "m.onnx"),
                             "a.png"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"noisystudent: error: model file not found: {tmp_path}/m.onnx"
