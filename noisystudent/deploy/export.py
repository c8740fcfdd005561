"""``noisystudent export``: a finished run's final weights (the EMA where one was kept, as saved)
as an ONNX model that carries its own preprocessing: uint8 images in (N, C, S, S) at the size
and channels the run stored them, logits out; the resize, grayscale-to-RGB and normalisation
run inside the graph. Class names, stored size and channels, the model's input spec and the
run's data settings are in the model's metadata. Batch size is dynamic.

Needs the ``export`` extra (onnx, onnxscript for PyTorch's exporter, onnxruntime for the
parity check): ``pip install -e '.[export]' in a checkout``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from noisystudent import __version__
from noisystudent.core import runs
from noisystudent.core.config import shared_settings, shared_settings_of
from noisystudent.core.errors import UserError
from noisystudent.models.saved import TrainedModel, load_trained
from noisystudent.models.transforms import InputSpec, to_model_input

from .onnx_runtime import CLASSES, SETTINGS, STORED_CHANNELS, STORED_SIZE, OnnxModel

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
OPSET = 18  # Resize with antialias (own images stored larger than the model's input)
# fp32 parity the export is checked against before it is kept (the bar).
MAX_LOGIT_DIFFERENCE = 1e-3


class DeployedModel(nn.Module):
    """uint8 images as the run stored them -> logits: the run's clean pipeline, then the
    model, in one graph."""

    def __init__(self, model: nn.Module, spec: InputSpec):
        super().__init__()
        self.model, self.spec = model, spec

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(to_model_input(images, self.spec)).float()


def require_export_extra() -> None:
    missing = []
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise UserError(f"ONNX export needs {', '.join(missing)}: "
                        "pip install -e '.[export]' in a checkout")


def export_onnx(run_dir: str | Path, out: str | Path | None = None, *,
                every_rank: bool = False) -> dict:
    """Write RUN_DIR's model as ONNX (default RUN_DIR/model.onnx) and check it against
    PyTorch on random images; returns the path and the measured difference. Under torchrun
    only rank 0 writes, unless ``every_rank`` (a file private to each process)."""
    require_export_extra()
    trained = load_trained(run_dir, torch.device("cpu"))
    path = Path(out) if out is not None else trained.run_dir / ONNX_FILE
    if path.suffix != ".onnx":
        raise UserError(f"the exported file must end in .onnx: {path}")
    deployed = DeployedModel(trained.model.to(memory_format=torch.contiguous_format),
                             trained.spec).eval()
    channels, size = trained.info["stored_channels"], trained.info["stored_size"]
    example = torch.randint(0, 256, (2, channels, size, size), dtype=torch.uint8)
    runs.atomic_write(path, lambda tmp: _write_onnx(deployed, example, tmp, metadata(trained)),
                      every_rank=every_rank)
    difference = check_parity(deployed, path, channels, size)
    log.debug("exported %s -> %s (max |logit difference| %.2e on random images)",
             trained.run_dir, path, difference)
    return {"path": str(path), "max_logit_difference": difference}


def metadata(trained: TrainedModel) -> dict[str, str]:
    info = trained.info
    return {
        CLASSES: json.dumps(trained.classes),
        STORED_SIZE: str(info["stored_size"]),
        STORED_CHANNELS: str(info["stored_channels"]),
        SETTINGS: json.dumps(shared_settings(shared_settings_of(trained.config))),
        "model": info["model"],
        "input": json.dumps(info["input"]),
        "input_format": f"uint8 (batch, {info['stored_channels']}, {info['stored_size']}, "
                        f"{info['stored_size']}), 0-255",
        "source_run": str(trained.run_dir),
        "noisystudent_version": __version__,
    }


def _write_onnx(deployed: DeployedModel, example: torch.Tensor, tmp: Path,
                meta: dict[str, str]) -> None:
    import onnx

    batch = torch.export.Dim("batch", min=1)
    # The exporter reports its progress on stdout and warns about its own internals.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(deployed, (example,), input_names=["images"],
                                    output_names=["logits"], opset_version=OPSET,
                                    dynamic_shapes={"images": {0: batch}}, dynamo=True,
                                    verbose=False)
    model = program.model_proto
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save_model(model, str(tmp))


@torch.no_grad()
def check_parity(deployed: DeployedModel, path: Path, channels: int, size: int) -> float:
    """Max |logit difference| between PyTorch and ONNX Runtime on random images at two batch
    sizes; a file over the bar is removed and the export fails."""
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for batch in (1, 5):
        images = torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8,
                               generator=gen)
        expected = deployed(images).numpy()
        got = OnnxModel(path).logits(images.numpy())
        worst = max(worst, float(np.abs(expected - got).max()))
    if worst > MAX_LOGIT_DIFFERENCE:
        path.unlink()
        raise UserError(f"the ONNX model's logits differ from PyTorch's by {worst:.2e} "
                        f"(> {MAX_LOGIT_DIFFERENCE}); nothing was written")
    return worst
