"""small_models.py and airbench.py: the CIFAR ResNets, Wide ResNets and the airbench family in
timm's registry, against the papers' parameter counts and timm's model interface."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import DropPath

from noisystudent.core.errors import UserError
from noisystudent.models.build import (
    configure_finetune,
    count_parameters,
    create_model,
    init_from_images,
    model_input_config,
)
from noisystudent.training.optim import param_groups, scale_norm_biases

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


# --- the airbench family (airbench.py) -------------------------------------------------------

# Parameters in millions, 10 classes: airbench94's net at 64/256/256 has 1.97 M (its README);
# the narrow and the airbench96-shaped members as built here.
AIRBENCH_PARAMETERS = {"cifar_airbench_s": 0.498, "cifar_airbench": 1.973,
                       "cifar_airbench_l": 9.919}


@pytest.mark.parametrize("name", sorted(AIRBENCH_PARAMETERS))
def test_airbench_parameter_counts(name):
    millions = count_parameters(create_model(name, 10)) / 1e6
    assert abs(millions - AIRBENCH_PARAMETERS[name]) <= 0.0005, millions


@pytest.mark.parametrize("in_chans", [1, 3])
def test_airbench_timm_interface(in_chans):
    model = timm.create_model("cifar_airbench_s", num_classes=7, in_chans=in_chans).eval()
    x = torch.randn(2, in_chans, 28, 28)
    features = model.forward_features(x)
    # 2x2 stem without padding (27 px), then three max-pools: 13, 6, 3.
    assert features.shape == (2, model.num_features, 3, 3) and model.num_features == 128
    assert model.forward_head(features, pre_logits=True).shape == (2, 128)
    assert model(x).shape == (2, 7) and model.get_classifier().out_features == 7
    assert model.get_classifier().bias is None  # airbench's head has no bias
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.get_classifier().bias is None
    model.reset_classifier(0)
    assert model(x).shape == (2, 128)
    assert model.forward_features(torch.randn(1, in_chans, 32, 32)).shape[-2:] == (3, 3)
    info = model_input_config(model)
    assert info["channels"] == in_chans and len(info["mean"]) == in_chans


def test_airbench_stages_freeze_and_layer_decay():
    model = create_model("cifar_airbench", 10)
    trains = {n for n, p in model.named_parameters() if p.requires_grad}  # not the BN scales
    configure_finetune(model, "freeze", freeze_stages=1)
    frozen = {n.split(".")[0] for n, p in model.named_parameters()
              if n in trains and not p.requires_grad}
    assert frozen == {"conv_stem", "stage1"}
    groups = param_groups(create_model("cifar_airbench_s", 10), 0.1, 5e-4, layer_decay=0.5)
    scales = sorted({g["lr_scale"] for g in groups})
    assert scales == [0.5 ** 4, 0.5 ** 3, 0.5 ** 2, 0.5, 1.0]  # stem, 3 stages, head


def test_whitening_stem_whitens_the_images_patches():
    """After init_stem_from_images, the stem's first 2 c k^2 filters map the images' 2x2 patches
    to uncorrelated unit-variance outputs (and their negatives); the stem is frozen."""
    torch.manual_seed(0)
    mixing = torch.randn(3, 3)
    images = torch.einsum("dc,nchw->ndhw", mixing, torch.randn(64, 3, 16, 16))
    images = images + torch.roll(images, 1, dims=-1)  # neighbouring pixels correlated
    model = create_model("cifar_airbench_s", 10)
    assert not model.conv_stem.weight.requires_grad
    init_from_images(model, images)
    weight = model.conv_stem.weight[:12].reshape(12, -1).double()
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    out = patches.double() @ weight.T
    covariance = out.T @ out / len(out)
    torch.testing.assert_close(covariance, torch.eye(12, dtype=torch.float64), atol=0.02,
                               rtol=0)
    torch.testing.assert_close(model.conv_stem.weight[12:24], -model.conv_stem.weight[:12])
    one_channel = create_model("cifar_airbench_s", 10, in_chans=1)
    init_from_images(one_channel, images[:, :1])  # 8 whitening filters, 16 mixtures of them
    assert torch.isfinite(one_channel.conv_stem.weight).all()
    trained_stem = create_model("cifar_airbench_s", 10, options={"whiten_stem": False})
    before = trained_stem.conv_stem.weight.clone()
    init_from_images(trained_stem, images)
    assert trained_stem.conv_stem.weight.requires_grad
    assert torch.equal(trained_stem.conv_stem.weight, before)


def test_airbench_options_dirac_batchnorm_and_drop_path():
    model = create_model("cifar_airbench_s", 10)
    x = torch.randn(2, 32, 5, 5)
    torch.testing.assert_close(model.stage1.conv2(x), x)  # dirac: the identity at the start
    plain = create_model("cifar_airbench_s", 10, options={"dirac_init": False})
    assert not torch.allclose(plain.stage1.conv2(x), x)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(not n.weight.requires_grad and n.bias.requires_grad for n in norms)
    assert all(n.momentum == 0.4 for n in norms)
    tuned = create_model("cifar_airbench_s", 10, options={"bn_weight": True, "bn_momentum": 0.1})
    norms = [m for m in tuned.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(n.weight.requires_grad and n.momentum == 0.1 for n in norms)
    with pytest.warns(UserWarning, match="drop_path_rate has no effect"):
        create_model("cifar_airbench_s", 10, drop_path_rate=0.2)
    large = create_model("cifar_airbench_l", 10, drop_path_rate=0.2)
    rates = [m.drop_prob for m in large.modules() if isinstance(m, DropPath)]
    assert rates == pytest.approx([0.1, 0.2])  # a residual per group: 0, 0.1, 0.2


def test_flip_tta_averages_the_mirror_in_eval_only():
    torch.manual_seed(0)
    model = create_model("cifar_airbench_s", 10, in_chans=1, options={"flip_tta": True})
    x = torch.randn(3, 1, 28, 28)
    model.eval()
    plain = model.forward_head(model.forward_features(x))
    mirror = model.forward_head(model.forward_features(x.flip(-1)))
    torch.testing.assert_close(model(x), (plain + mirror) / 2)
    torch.testing.assert_close(model(x), model(x.flip(-1)))
    model.train()
    assert not torch.allclose(model(x), model(x.flip(-1)))


def test_model_options_errors_are_one_line():
    with pytest.raises(UserError, match="cifar_airbench_s has no model option 'foo'; it takes "
                       "whiten_stem"):
        create_model("cifar_airbench_s", 10, options={"foo": 1})
    with pytest.raises(UserError, match="cifar_resnet20 has no model option 'flip_tta'"):
        create_model("cifar_resnet20", 10, options={"flip_tta": True})
    with pytest.raises(UserError, match="model_options cannot set 'drop_rate'"):
        create_model("cifar_airbench_s", 10, options={"drop_rate": 0.1})
    with pytest.raises(UserError, match="no ImageNet weights"):
        create_model("cifar_airbench", 10, pretrained="offline")


def test_model_options_from_the_command_line_are_typed():
    from noisystudent.core.config import TrainConfig

    config = TrainConfig(model="cifar_airbench_s",
                         model_options="flip_tta=true,bn_momentum=0.2,global_pool=avg")
    assert config.model_options == {"flip_tta": True, "bn_momentum": 0.2, "global_pool": "avg"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        TrainConfig(model_options="flip_tta")


def test_norm_bias_lr_scale_moves_batchnorm_shifts_to_their_own_group():
    model = create_model("cifar_airbench_s", 10)
    groups = scale_norm_biases(model, param_groups(model, 0.1, 5e-4), 64.0)
    shifts = {id(m.bias) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    fast = [g for g in groups if g["lr_scale"] == 64.0]
    assert len(fast) == 1 and {id(p) for p in fast[0]["params"]} == shifts
    assert fast[0]["lr"] == pytest.approx(6.4) and fast[0]["weight_decay"] == 0.0
    trainable = [p for p in model.parameters() if p.requires_grad]  # not the BN scales
    assert sum(len(g["params"]) for g in groups) == len(trainable)
