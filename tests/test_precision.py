"""precision.py: 'auto' trains in the faster dtype for the model at hand, measured once per
(CPU, model, input, batch) and cached; CPUs without bf16 instructions keep fp32."""

from __future__ import annotations

import json

import pytest
import torch

from noisystudent.core.config import StudentConfig, TrainConfig
from noisystudent.models import precision, speed
from noisystudent.models.build import create_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NOISYSTUDENT_CACHE", str(tmp_path))
    monkeypatch.setattr(precision, "has_bf16_units", lambda: True)
    return tmp_path / precision.CACHE_FILE


def fake_rates(monkeypatch, fp32: float, bf16: float) -> list:
    calls = []

    def rate(model, shape, dtype, **kwargs):
        calls.append((type(model).__name__, shape, dtype))
        torch.rand(3)  # measuring draws random numbers: the run's stream must not move
        return bf16 if dtype == torch.bfloat16 else fp32

    monkeypatch.setattr(speed, "training_rate", rate)
    return calls


CPU = torch.device("cpu")


def test_auto_picks_the_faster_dtype_measured_once_and_cached(cache, monkeypatch):
    calls = fake_rates(monkeypatch, fp32=600.0, bf16=1000.0)
    config = TrainConfig(model="cifar_resnet20", pretrained="none", image_size=28, in_chans=1,
                         batch_size=64)
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    assert precision.training_precision(config, CPU) == torch.bfloat16
    assert torch.equal(torch.rand(1), expected_next)
    assert [(name, shape) for name, shape, _ in calls] == \
        [("CifarResNet", (64, 1, 28, 28))] * 2 * precision.PROBE_ROUNDS
    saved = json.loads(cache.read_text())
    (key, entry), = saved.items()
    assert json.loads(key)["model"] == "cifar_resnet20" and entry["dtype"] == "bf16"
    assert entry["images_per_s"] == {"fp32": 600.0, "bf16": 1000.0}
    # Cached: a second stage (or the run's --resume) measures nothing and agrees.
    calls.clear()
    assert precision.training_precision(config, CPU) == torch.bfloat16 and not calls
    # Another model is another measurement; slower in bf16 there, so fp32.
    fake_rates(monkeypatch, fp32=900.0, bf16=400.0)
    lite = TrainConfig(model="tf_efficientnet_lite0", pretrained="none", batch_size=300)
    assert precision.training_precision(lite, CPU) is None
    assert len(json.loads(cache.read_text())) == 2


def test_a_near_tie_keeps_fp32(cache, monkeypatch):
    fake_rates(monkeypatch, fp32=100.0, bf16=105.0)
    config = TrainConfig(model="cifar_resnet20", pretrained="none")
    assert precision.training_precision(config, CPU) is None


def test_a_student_is_measured_at_its_whole_step_capped(cache, monkeypatch):
    calls = fake_rates(monkeypatch, fp32=1.0, bf16=2.0)
    student = StudentConfig(model="cifar_resnet20", pretrained="none", image_size=28,
                            batch_size=16, unlabeled_ratio=3, pseudo_labels="x")
    precision.training_precision(student, CPU)
    assert calls[0][1] == (64, 3, 28, 28)  # 16 labeled + 48 pseudo-labeled
    student.batch_size = 64
    precision.training_precision(student, CPU)
    assert calls[-1][1][0] == precision.MAX_MEASURED_BATCH


def test_no_measurement_without_bf16_hardware_or_when_a_dtype_is_named(cache, monkeypatch):
    calls = fake_rates(monkeypatch, fp32=1.0, bf16=2.0)
    config = TrainConfig(model="cifar_resnet20", pretrained="none")
    monkeypatch.setattr(precision, "has_bf16_units", lambda: False)
    assert precision.training_precision(config, CPU) is None  # bf16 is emulated there
    monkeypatch.setattr(precision, "has_bf16_units", lambda: True)
    config.precision = "fp32"
    assert precision.training_precision(config, CPU) is None
    config.precision = "bf16"
    assert precision.training_precision(config, CPU) == torch.bfloat16
    assert not calls and not cache.exists()


def test_a_damaged_cache_is_measured_again(cache, monkeypatch):
    cache.write_text("{not json")
    calls = fake_rates(monkeypatch, fp32=2.0, bf16=1.0)
    config = TrainConfig(model="cifar_resnet20", pretrained="none")
    assert precision.training_precision(config, CPU) is None
    assert len(calls) == 2 * precision.PROBE_ROUNDS
    assert json.loads(cache.read_text())


def test_the_real_measurement_times_both_dtypes():
    rate = speed.training_rate(create_model("cifar_resnet20", 10), (8, 3, 28, 28), None,
                               steps=1, warmup=1)
    assert rate > 0


def test_the_model_options_are_measured_and_keyed(cache, monkeypatch):
    """An airbench student with options is built as configured and cached under its options:
    flip TTA changes nothing in training, but another option may change the step."""
    calls = []

    def rate(model, shape, dtype, **kwargs):
        calls.append(model.flip_tta)
        return 1000.0 if dtype == torch.bfloat16 else 600.0

    monkeypatch.setattr(speed, "training_rate", rate)
    config = TrainConfig(model="cifar_airbench_s", pretrained="none", image_size=28,
                         in_chans=1, drop_path_rate=0.0, model_options={"flip_tta": True})
    assert precision.training_precision(config, CPU) == torch.bfloat16
    assert calls == [True] * 2 * precision.PROBE_ROUNDS
    (key,) = json.loads(cache.read_text())
    assert json.loads(key)["options"] == {"flip_tta": True}


def test_a_burst_of_other_work_beside_one_probe_does_not_fix_the_slower_dtype(cache,
                                                                               monkeypatch):
    # Measured on a Xeon with AMX: a probe beside other work timed cifar_airbench_s at 756
    # images/s fp32 against 608 bf16; alone, 1,542 against 3,213.
    measured = {None: [756.0, 1542.0], torch.bfloat16: [608.0, 3213.0]}
    monkeypatch.setattr(speed, "training_rate",
                        lambda model, shape, dtype, **_: measured[dtype].pop(0))
    config = TrainConfig(model="cifar_airbench_s", pretrained="none", image_size=28,
                         in_chans=1, drop_path_rate=0.0, batch_size=128)
    assert precision.training_precision(config, CPU) == torch.bfloat16
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["images_per_s"] == {"fp32": 1542.0, "bf16": 3213.0}


def test_kernels_held_to_avx2_stand_in_for_a_cpu_without_bf16_units(monkeypatch):
    """ATEN_CPU_CAPABILITY=avx2 on a CPU with bf16 units: the plan and 'auto' treat it as the
    AVX2-only CPU it stands in for, and its speeds are cached apart from the CPU's own."""
    from noisystudent.core import device

    monkeypatch.setattr(device.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    own_key = speed.machine_key(rate="x")
    assert device.cpu_kind() == "AMX" and device.has_bf16_units()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert device.cpu_kind() == "AVX2" and not device.has_bf16_units()
    assert device.resolve_precision("auto", CPU, training=False) is None
    assert speed.machine_key(rate="x") != own_key
