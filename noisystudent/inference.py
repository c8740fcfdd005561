"""Rebuild a finished run's model for evaluation, prediction, teaching and pseudo-labeling."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from . import runs
from .errors import UserError
from .models import create_model
from .transforms import InputSpec


@dataclass
class TrainedModel:
    model: torch.nn.Module          # in eval mode: no dropout, no drop-path, BN in inference
    spec: InputSpec
    classes: list[str]
    info: dict                      # model.json
    config: dict                    # the run's resolved config.yaml
    run_dir: Path


def load_trained(run_dir: str | Path, device: torch.device) -> TrainedModel:
    run = runs.require_run(run_dir, runs.MODEL, runs.MODEL_INFO, runs.CONFIG)
    info = runs.read_json(run / runs.MODEL_INFO)
    model = create_model(info["model"], info["num_classes"], pretrained="none")
    state = runs.load_weights(run / runs.MODEL)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"{run / runs.MODEL} does not fit {info['model']}: "
                        f"{str(err).splitlines()[0]}") from None
    # channels_last: measured 1.7x faster Lite0 inference on this CPU, and the usual choice on GPU.
    model.to(device, memory_format=torch.channels_last).eval()
    return TrainedModel(model, InputSpec.from_dict(info["input"]), info["classes"], info,
                        runs.read_yaml(run / runs.CONFIG), run)
