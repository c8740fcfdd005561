"""Distillation losses: golden values by hand, and equality with timm's logit distillation."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.task.distillation import LogitDistillationTask

from noisystudent.labels.store import retemper
from noisystudent.models.transforms import InputSpec, at_most, to_model_input
from noisystudent.training.losses import kd_loss, soft_target_ce
from noisystudent.training.tasks import DistillTask, NoisyStudentTask


@pytest.mark.parametrize("temperature", [0.5, 0.8, 2.0])
def test_retemper_is_the_labelers_softmax_at_the_new_temperature(temperature):
    logits = torch.randn(8, 10, generator=torch.Generator().manual_seed(0)) * 4
    stored = logits.softmax(1)
    torch.testing.assert_close(retemper(stored, temperature), (logits / temperature).softmax(1),
                               atol=1e-6, rtol=1e-5)


def test_retemper_keeps_one_hot_labels_and_leaves_t1_alone():
    one_hot = F.one_hot(torch.tensor([2, 0, 1]), 3).float()
    assert torch.equal(retemper(one_hot, 0.5), one_hot)
    assert torch.equal(retemper(one_hot, 50.0), one_hot)
    # Golden value: [0.8, 0.2] at T = 0.5 is [0.64, 0.04] / 0.68.
    torch.testing.assert_close(retemper(torch.tensor([[0.8, 0.2]]), 0.5),
                               torch.tensor([[0.64 / 0.68, 0.04 / 0.68]]))


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


class ConstantLogits(torch.nn.Module):
    """A model whose logits are its one parameter, whatever the image: golden values by hand."""

    def __init__(self, logits: list[float]):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1)


def test_noisy_student_loss_golden_value():
    # Logits [log 3, 0]: the student predicts q = [0.75, 0.25] for every image.
    # Labeled batch (labels 0, 1): CE = -(log 0.75 + log 0.25) / 2.
    # Pseudo-labeled batch, soft labels p = [0.25, 0.75] and [1, 0]:
    #   soft CE = -(0.25 log 0.75 + 0.75 log 0.25 + 1 log 0.75) / 2.
    # loss = CE + unlabeled_weight (3) x soft CE.
    ce = -(math.log(0.75) + math.log(0.25)) / 2                          # 0.8370
    pseudo = -(0.25 * math.log(0.75) + 0.75 * math.log(0.25) + math.log(0.75)) / 2  # 0.6633
    spec = InputSpec(4, (0.5,) * 3, (0.5,) * 3)
    task = NoisyStudentTask(ConstantLogits([math.log(3.0), 0.0]), lambda x: x, spec,
                            unlabeled_weight=3.0)
    images = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    out = task({"images": images, "labels": torch.tensor([0, 1]),
                "pseudo_images": torch.zeros(2, 1, 4, 4, dtype=torch.uint8),
                "pseudo_probs": torch.tensor([[0.25, 0.75], [1.0, 0.0]])})
    assert out["ce"].item() == pytest.approx(0.836988, rel=1e-5)
    assert out["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert out["pseudo"].item() == pytest.approx(pseudo, rel=1e-6)
    assert out["loss"].item() == pytest.approx(ce + 3 * pseudo, rel=1e-6)
    assert out["logits"].shape == (4, 2)  # one forward pass over both batches


def test_consistency_targets_the_students_confident_class_on_the_weak_view():
    # Logits [log 19, 0]: q = [0.95, 0.05] on every view, so every pseudo-labeled image is
    # confident at 0.95 and its target is class 0: consistency = -log 0.95; at a threshold
    # of 0.96 none is, and the term is 0. The gradient flows only through the noised view.
    spec = InputSpec(4, (0.5,) * 3, (0.5,) * 3)
    batch = {"images": torch.zeros(2, 1, 4, 4, dtype=torch.uint8), "labels": torch.tensor([0, 1]),
             "pseudo_images": torch.zeros(3, 1, 4, 4, dtype=torch.uint8),
             "pseudo_probs": torch.tensor([[0.5, 0.5]] * 3)}
    plain = NoisyStudentTask(ConstantLogits([math.log(19.0), 0.0]), lambda x: x, spec)(batch)
    task = NoisyStudentTask(ConstantLogits([math.log(19.0), 0.0]), lambda x: x, spec,
                            consistency_weight=2.0, consistency_threshold=0.95,
                            weak_augment=lambda x: x)
    out = task(batch)
    assert out["consistency"].item() == pytest.approx(-math.log(0.95), rel=1e-5)
    assert out["confident"].item() == 1.0
    assert out["loss"].item() == pytest.approx(plain["loss"].item() - 2 * math.log(0.95),
                                               rel=1e-5)
    task.consistency_threshold = 0.96
    assert task(batch)["consistency"].item() == 0.0


def test_the_noise_runs_at_the_models_size_not_the_stored_one():
    # 96 px labeled photos and 32 px decoded pseudo-labeled ones, a 32 px student: both sides
    # reach the noise at 32 px (a 4 px crop is the same share of the image as where it was
    # set); images smaller than the model's size reach it as they are.
    seen = []

    def augment(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape[-2:]))
        return x

    spec = InputSpec(32, (0.5,) * 3, (0.5,) * 3)
    task = NoisyStudentTask(ConstantLogits([0.0, 0.0]), augment, spec,
                            consistency_weight=1.0, weak_augment=augment)
    stripes = torch.zeros(2, 3, 96, 96, dtype=torch.uint8)
    stripes[..., ::2] = 200  # 1 px stripes: antialiased, they average to 100
    out = task({"images": stripes, "labels": torch.tensor([0, 1]),
                "pseudo_images": torch.zeros(3, 3, 32, 32, dtype=torch.uint8),
                "pseudo_probs": torch.tensor([[0.5, 0.5]] * 3)})
    assert seen == [(32, 32), (32, 32)] and out["logits"].shape == (5, 2)
    assert at_most(stripes, 32).float().mean().item() == pytest.approx(100, abs=1)
    small = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    assert at_most(small, 32) is small


def test_feature_distillation_trains_a_projection_inside_the_trainable_module():
    torch.manual_seed(0)
    student = timm.create_model("resnet10t", num_classes=5)           # 512 pooled features
    teacher = timm.create_model("mobilenetv3_small_050", num_classes=5)  # 1024 pre-logits
    spec = InputSpec(32, (0.5,) * 3, (0.5,) * 3)
    task = DistillTask(student, teacher, lambda x: x, spec, teacher_spec=spec,
                       feature_weight=0.5)
    projection = task.trainable_module.projection
    assert projection.weight.shape == (1024, 512)
    out = task({"images": torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8),
                "labels": torch.tensor([0, 1, -1, -1])})
    assert out["feature"].item() > 0
    out["loss"].backward()
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    # What is evaluated and saved is the student alone.
    assert task.final_model() is student
    assert set(task.trained_module().state_dict()) == \
        {f"student.{k}" for k in student.state_dict()} | {"projection.weight"}


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

    ours = DistillTask(student, teacher, lambda x: x, spec, teacher_spec=spec,
                       temperature=temperature, kd_weight=kd_weight, ce_weight=ce_weight)(
        {"images": images, "labels": labels})
    torch.testing.assert_close(ours["kd"], expected["kd_loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["ce"], expected["task_loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["loss"], expected["loss"], rtol=1e-5, atol=1e-6)
