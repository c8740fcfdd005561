"""Distillation losses: golden values by hand, and equality with timm's logit distillation."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.task.distillation import LogitDistillationTask

from noisystudent.losses import FeatureDistillLoss, kd_loss, soft_target_ce
from noisystudent.tasks import DistillTask
from noisystudent.transforms import InputSpec, to_model_input


def test_kd_loss_golden_value():
    # Two classes, one example, T = 2. Softened teacher p = softmax([2, 0] / 2) = softmax([1, 0]),
    # student q = softmax([0, 0] / 2) = [0.5, 0.5]. KL(p || q) = sum p log(p / q), times T² = 4.
    p1 = math.e / (math.e + 1)
    p = [p1, 1 - p1]
    expected = 4 * sum(pi * math.log(pi / 0.5) for pi in p)
    value = kd_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]]), temperature=2.0)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.4438, abs=1e-4)  # 4 x (0.2777 - 0.1668)


def test_kd_loss_is_zero_when_student_matches_and_batchmean():
    logits = torch.randn(5, 7)
    assert kd_loss(logits, logits, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    one = kd_loss(torch.zeros(1, 2), torch.tensor([[2.0, 0.0]]), 2.0)
    four = kd_loss(torch.zeros(4, 2), torch.tensor([[2.0, 0.0]]).repeat(4, 1), 2.0)
    assert four.item() == pytest.approx(one.item(), rel=1e-6)  # mean over the batch, not sum


def test_soft_target_ce_golden_value_and_hard_label_case():
    # -[0.25 log 0.5 + 0.75 log 0.5] = log 2 for a uniform student.
    value = soft_target_ce(torch.zeros(1, 2), torch.tensor([[0.25, 0.75]]))
    assert value.item() == pytest.approx(math.log(2), rel=1e-6)
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    assert soft_target_ce(logits, F.one_hot(labels, 4).float()).item() == pytest.approx(
        F.cross_entropy(logits, labels).item(), rel=1e-5)


def test_feature_loss_projects_when_widths_differ():
    same = FeatureDistillLoss(8, 8)
    x = torch.randn(3, 8)
    assert same(x, x).item() == 0.0 and not list(same.parameters())
    projected = FeatureDistillLoss(8, 16)
    assert projected(x, torch.randn(3, 16)).requires_grad
    assert projected.project.weight.shape == (16, 8)


@pytest.mark.parametrize("temperature,kd_weight,ce_weight", [(1.0, 1.0, 1.0), (4.0, 0.7, 0.3)])
def test_equal_to_timm_logit_distillation(temperature, kd_weight, ce_weight):
    torch.manual_seed(0)
    student = timm.create_model("resnet10t", num_classes=5).eval()
    teacher = timm.create_model("resnet10t", num_classes=5).eval()
    spec = InputSpec(32, tuple(student.pretrained_cfg["mean"]),
                     tuple(student.pretrained_cfg["std"]))
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3])

    reference = LogitDistillationTask(student, teacher, criterion=torch.nn.CrossEntropyLoss(),
                                      distill_loss_weight=kd_weight, task_loss_weight=ce_weight,
                                      temperature=temperature, verbose=False)
    expected = reference(to_model_input(images, spec), labels)

    ours = DistillTask(student, teacher, lambda x: x, spec, spec, temperature, kd_weight,
                       ce_weight)(
        {"images": images, "labels": labels})
    torch.testing.assert_close(ours["kd"], expected["kd_loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["ce"], expected["task_loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["loss"], expected["loss"], rtol=1e-5, atol=1e-6)
