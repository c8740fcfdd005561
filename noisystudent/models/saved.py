"""A finished run's model on disk, written once by the stage that trained it and rebuilt by
everything that uses it (evaluation, prediction, export, teaching, pseudo-labeling):

    RUN/model.safetensors   the final weights (the EMA's where one was kept), checksummed
    RUN/model.json          the model's name and options, classes, its input (``InputSpec``)
                            and how the run stored its images (size and channels)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from noisystudent.core import runs
from noisystudent.core.errors import UserError
from noisystudent.core.layout import kept_model

from .build import create_model, keep_spatial_map
from .transforms import InputSpec


def save_model(run_dir: Path, model: torch.nn.Module, *, name: str, spec: InputSpec,
               classes: list[str], stored: tuple[int, int], small_image: int = 0,
               model_options: dict | None = None) -> None:
    """The final weights plus what evaluate/predict/teachers need to rebuild the model."""
    runs.save_weights(run_dir / runs.MODEL, model.state_dict())
    runs.write_json(run_dir / runs.MODEL_INFO, {
        "model": name, "num_classes": len(classes), "classes": classes,
        "input": spec.to_dict(), "stored_channels": stored[0], "stored_size": stored[1],
        "small_image": small_image, "model_options": model_options or {},
    })


@dataclass
class TrainedModel:
    model: torch.nn.Module          # in eval mode: no dropout, no drop-path, BN in inference
    spec: InputSpec
    classes: list[str]
    info: dict                      # model.json
    config: dict                    # the run's resolved config.yaml
    run_dir: Path


def load_trained(run_dir: str | Path, device: torch.device) -> TrainedModel:
    """A run's model in eval mode; for a self-training run, the step it kept."""
    run = runs.require_run(kept_model(run_dir), runs.MODEL, runs.MODEL_INFO, runs.CONFIG)
    info = runs.read_json(run / runs.MODEL_INFO)
    spec = InputSpec.from_dict(info["input"])
    model = keep_spatial_map(create_model(info["model"], info["num_classes"], pretrained="none",
                                          in_chans=spec.channels,
                                          options=info.get("model_options")),
                             info.get("small_image", 0))
    state = runs.load_weights(run / runs.MODEL)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"{run / runs.MODEL} does not fit {info['model']}: "
                        f"{str(err).splitlines()[0]}") from None
    # channels_last: measured 1.7x faster Lite0 inference on this CPU, and the usual choice on GPU.
    model.to(device, memory_format=torch.channels_last).eval()
    return TrainedModel(model=model, spec=spec,
                        classes=info["classes"], info=info,
                        config=runs.read_yaml(run / runs.CONFIG), run_dir=run)
