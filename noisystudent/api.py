"""The Python API in one place: a function per command, whichever folder holds it, so that a
user's imports do not follow the package's layout (`from noisystudent.api import self_train`).
"""

from .core.config import DistillConfig, PseudoLabelConfig, SelfTrainConfig, TrainConfig
from .core.settings_io import load_config
from .deploy.export import export_onnx
from .deploy.onnx_runtime import predict_onnx
from .deploy.predict import predict
from .plan import planned_config
from .reports.evaluate import evaluate, evaluate_exported
from .reports.review import review
from .stages.distill import distill
from .stages.pseudo_label import pseudo_label
from .stages.selftrain import self_train
from .stages.train import train

__all__ = ["DistillConfig", "PseudoLabelConfig", "SelfTrainConfig", "TrainConfig", "distill",
           "evaluate", "evaluate_exported", "export_onnx", "load_config", "planned_config",
           "predict", "predict_onnx", "pseudo_label", "review", "self_train", "train"]
