"""small_models.py: the CIFAR ResNets and Wide ResNets in timm's registry, against the papers'
parameter counts and timm's model interface."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import DropPath

from noisystudent.errors import UserError
from noisystudent.models import (
    configure_finetune,
    count_parameters,
    create_model,
    model_input_config,
)
from noisystudent.optim import param_groups

# Parameters in millions as the papers give them (He et al. 2016 table 6; Zagoruyko &
# Komodakis 2016 tables), with the papers' rounding, for 10 classes.
PAPER_PARAMETERS = {
    "cifar_resnet20": 0.27, "cifar_resnet32": 0.46, "cifar_resnet56": 0.85,
    "cifar_wrn28_2": 1.5, "cifar_wrn16_4": 2.7, "cifar_wrn28_10": 36.5,
}
ROUNDING = {"cifar_wrn28_2": 0.05, "cifar_wrn16_4": 0.05, "cifar_wrn28_10": 0.05}  # one decimal


@pytest.mark.parametrize("name", sorted(PAPER_PARAMETERS))
def test_parameter_counts_match_the_papers(name):
    model = create_model(name, 10)
    millions = count_parameters(model) / 1e6
    assert abs(millions - PAPER_PARAMETERS[name]) <= ROUNDING.get(name, 0.005), millions


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_wrn16_4"])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_timm_interface(name, in_chans):
    model = timm.create_model(name, num_classes=7, in_chans=in_chans).eval()
    x = torch.randn(2, in_chans, 32, 32)
    features = model.forward_features(x)
    # Stride-1 stem, two stride-2 stages: 32 px ends on 8x8 (not 1x1).
    assert features.shape == (2, model.num_features, 8, 8)
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    assert model(x).shape == (2, 7)
    assert model.get_classifier().out_features == 7
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    # 28 px (Fashion-MNIST) works too and ends on 7x7.
    assert model.forward_features(torch.randn(1, in_chans, 28, 28)).shape[-2:] == (7, 7)
    info = model_input_config(model)
    assert info["channels"] == in_chans and len(info["mean"]) == len(info["std"]) == in_chans


def test_stochastic_depth_grows_to_the_rate_and_dropout_is_active_in_training():
    model = create_model("cifar_resnet56", 10, drop_rate=0.5, drop_path_rate=0.2)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    # 27 blocks, the first at 0 (no DropPath module), linear to 0.2 at the last.
    assert len(rates) == 26 and rates[-1] == pytest.approx(0.2)
    assert rates == sorted(rates) and rates[0] == pytest.approx(0.2 / 26)
    x = torch.randn(4, 3, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))  # dropout and drop-path draw anew
    model.eval()
    assert torch.equal(model(x), model(x))
    assert not any(isinstance(m, DropPath) for m in create_model("cifar_resnet20", 10).modules())


def test_they_train_from_scratch_only():
    with pytest.raises(UserError, match="no ImageNet weights: it trains from scratch"):
        create_model("cifar_resnet20", 10, pretrained="offline")
    with pytest.raises(UserError, match="could not load hub weights for cifar_wrn28_2"):
        create_model("cifar_wrn28_2", 10, pretrained="hub")


def test_stages_freeze_and_layer_decay_follow_the_group_matcher():
    model = create_model("cifar_resnet20", 10)
    configure_finetune(model, "freeze", freeze_stages=1)
    frozen = {n.split(".")[0] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"conv_stem", "bn_stem", "stage1"}
    groups = param_groups(create_model("cifar_wrn28_2", 10), 0.1, 5e-4, layer_decay=0.5)
    scales = sorted({g["lr_scale"] for g in groups})
    assert scales[-1] == 1.0 and scales[0] < 0.2  # stem, 3 stages, head: 0.5 ** 4 at the stem
