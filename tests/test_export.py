"""ONNX export: parity with PyTorch on the test set, predictions and evaluation from the .onnx
file, a runner without torch, and one-line errors."""

from __future__ import annotations

import builtins
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from noisystudent.cli import main
from noisystudent.core.errors import UserError
from noisystudent.data.fashion_mnist import load_fashion_mnist
from noisystudent.data.loaders import ImageBatches
from noisystudent.deploy.export import export_onnx
from noisystudent.deploy.onnx_runtime import OnnxModel
from noisystudent.models.inference import predict_logits
from noisystudent.models.saved import load_trained
from noisystudent.models.transforms import CleanPipeline
from noisystudent.reports.evaluate import evaluate, evaluate_exported

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def exported(tiny_teacher, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export") / "teacher.onnx"
    result = export_onnx(tiny_teacher, path)
    assert result["path"] == str(path) and result["max_logit_difference"] <= 1e-3
    return path


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("images")
    test = load_fashion_mnist("test")
    paths = []
    for i in range(4):
        paths.append(str(folder / f"{i}.png"))
        Image.fromarray(test.images[i, 0].numpy()).save(paths[-1])
    return paths


def test_exported_model_matches_pytorch_on_the_test_set(tiny_teacher, exported):
    test = load_fashion_mnist("test")
    images, count = test.images[:2000], 2000
    trained = load_trained(tiny_teacher, torch.device("cpu"))
    loader = ImageBatches(images, test.labels[:count], 500, torch.device("cpu"))
    expected = predict_logits(trained.model, CleanPipeline(trained.spec), loader,
                              device=torch.device("cpu"), dtype=None).numpy()
    model = OnnxModel(exported)
    got = model.logits(images.numpy(), batch_size=500)
    assert np.abs(got - expected).max() <= 1e-3
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.999
    # Dynamic batch: one image, and an odd batch, give the same logits as batches of 500.
    np.testing.assert_allclose(model.logits(images[:1].numpy()), got[:1], atol=1e-4)
    np.testing.assert_allclose(model.logits(images[:7].numpy()), got[:7], atol=1e-4)
    assert model.classes == trained.classes
    assert (model.stored_channels, model.stored_size) == (1, 28)


def test_predict_and_evaluate_from_the_onnx_file_match_the_run(tiny_teacher, exported,
                                                               image_files, capsys):
    assert main(["predict", str(tiny_teacher), *image_files, "--top-k", "3"]) == 0
    from_run = capsys.readouterr().out
    assert main(["predict", str(exported), *image_files, "--top-k", "3"]) == 0
    assert capsys.readouterr().out == from_run
    from_run = evaluate(tiny_teacher, device="cpu", quiet=True)
    from_file = evaluate_exported(exported, quiet=True)
    assert from_file["test_images"] == from_run["test_images"] == 10_000
    assert abs(from_file["top1"] - from_run["top1"]) <= 0.001
    assert Path(from_file["files"][0]).is_file() and Path(from_file["files"][1]).is_file()


def test_the_deploy_runner_needs_no_torch(exported, image_files, capsys):
    """python -m noisystudent.deploy with torch made unimportable prints what predict prints."""
    assert main(["predict", str(exported), *image_files]) == 0
    expected = capsys.readouterr().out
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.argv[0] = 'deploy'; "
            "runpy.run_module('noisystudent.deploy', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code, str(exported), *image_files],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected


def test_export_errors_are_one_line(tiny_teacher, tmp_path, monkeypatch, capsys):
    fake = tmp_path / "fake.onnx"
    fake.write_text("not a model")
    assert main(["predict", str(fake), str(fake)]) == 2
    assert "cannot load" in capsys.readouterr().err
    assert main(["export", str(tiny_teacher), "--out", str(tmp_path / "m.bin")]) == 2
    assert ".onnx" in capsys.readouterr().err
    real_import = builtins.__import__

    def no_onnxscript(name, *args, **kwargs):
        if name == "onnxscript":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxscript)
    with pytest.raises(UserError, match=r"pip install -e '\.\[export\]'"):
        export_onnx(tiny_teacher, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("model, options", [("cifar_resnet20", {}),
                                            ("cifar_airbench_s", {"flip_tta": True})])
def test_a_one_channel_small_image_student_exports_with_parity(tmp_path, model, options):
    """A from-scratch small-image model on one grayscale channel: trained by ``train``,
    exported, and the ONNX graph (its own preprocessing included, and airbench's flip
    test-time augmentation when the run asked for it) agrees with PyTorch."""
    from noisystudent.stages.train import train
    from tests.conftest import quick_config

    run = tmp_path / model
    train(quick_config(model=model, in_chans=1, image_size=28, labels_per_class=3,
                       drop_path_rate=0.0, model_options=options), run, quiet=True)
    trained = load_trained(run, torch.device("cpu"))
    assert trained.spec.channels == 1 and trained.model.conv_stem.in_channels == 1
    assert getattr(trained.model, "flip_tta", False) == bool(options)
    path = tmp_path / f"{model}.onnx"
    assert export_onnx(run, path)["max_logit_difference"] <= 1e-3
    test = load_fashion_mnist("test")
    loader = ImageBatches(test.images[:500], test.labels[:500], 250, torch.device("cpu"))
    expected = predict_logits(trained.model, CleanPipeline(trained.spec), loader,
                              device=torch.device("cpu"), dtype=None).numpy()
    got = OnnxModel(path).logits(test.images[:500].numpy(), batch_size=250)
    assert np.abs(got - expected).max() <= 1e-3
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.999
    if options:  # the graph holds the mirror: a mirrored image gets the same logits
        mirrored = OnnxModel(path).logits(test.images[:8].flip(-1).numpy(), batch_size=8)
        np.testing.assert_allclose(mirrored, got[:8], atol=1e-4)
