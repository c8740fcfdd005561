from pathlib import Path

import pytest

from noisystudent.config import SelfTrainConfig, TrainConfig, load_config
from noisystudent.errors import UserError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_then_overrides(tmp_path):
    path = write(tmp_path, "epochs: 5\nlr: 0.01\nmodel: resnet18\n")
    config = load_config(TrainConfig, path, {"epochs": "7", "channels_last": "false"})
    assert (config.epochs, config.lr, config.model, config.channels_last) == (7, 0.01, "resnet18",
                                                                               False)


def test_unknown_key_lists_valid_keys(tmp_path):
    with pytest.raises(UserError, match=r"unknown config key epoch\b.*valid keys: .*epochs"):
        load_config(TrainConfig, write(tmp_path, "epoch: 3\n"))


def test_yaml_tags_that_build_objects_are_refused(tmp_path):
    path = write(tmp_path, "model: !!python/object/apply:os.system ['touch /tmp/pwned']\n")
    with pytest.raises(UserError, match="not plain YAML"):
        load_config(TrainConfig, path)


@pytest.mark.parametrize("key,value,message", [
    ("epochs", "0", "epochs must be in"),
    ("lr", "-1", "lr must be in"),
    ("batch_size", "many", "batch_size must be an integer"),
    ("finetune", "half", "finetune must be one of"),
    ("label_smoothing", "1.5", "label_smoothing must be in"),
])
def test_bad_values_are_one_line_errors(key, value, message):
    with pytest.raises(UserError, match=message) as info:
        load_config(TrainConfig, None, {key: value})
    assert "\n" not in str(info.value)


def test_config_must_be_a_mapping(tmp_path):
    with pytest.raises(UserError, match="must be a mapping"):
        load_config(TrainConfig, write(tmp_path, "- 1\n- 2\n"))


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs")
                                        .glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path):
    config = load_config(SelfTrainConfig, str(path))
    for k in range(1, config.iterations + 1):
        config.student_config(k, "labels").validate()
    config.teacher_config().validate()
    finetune = config.finetune_config("weights.safetensors")
    if finetune is not None:
        finetune.validate()


def test_the_final_fine_tune_refines_the_last_student_by_default():
    config = SelfTrainConfig(
        student={"model": "resnet10t", "optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4,
                 "in_chans": 1, "image_size": 28, "batch_size": 32},
        student_models=["cifar_resnet20", "cifar_resnet32"], iterations=2,
        finetune={"epochs": 2})
    config.validate()
    finetune = config.finetune_config("last.safetensors")
    assert (finetune.model, finetune.in_chans, finetune.image_size) == ("cifar_resnet32", 1, 28)
    assert (finetune.optimizer, finetune.weight_decay, finetune.batch_size) == ("sgd", 5e-4, 32)
    assert finetune.lr == pytest.approx(1e-3) and finetune.warmup_epochs == 0
    assert (finetune.augment, finetune.drop_rate, finetune.drop_path_rate) == ("light", 0, 0)
    assert finetune.epochs == 2 and finetune.pretrained == "last.safetensors"


def test_each_iteration_can_override_the_student_section(tmp_path):
    path = tmp_path / "grow.yaml"
    path.write_text("iterations: 3\nstudent: {passes: 2, lr: 0.1}\n"
                    "students: [{passes: 1.5}, {passes: 4, model: cifar_resnet32}]\n")
    config = load_config(SelfTrainConfig, str(path))
    first, second, third = (config.student_config(k, "labels") for k in (1, 2, 3))
    assert (first.passes, second.passes, third.passes) == (1.5, 4.0, 4.0)
    assert (first.model, second.model) == ("tf_efficientnet_lite0", "cifar_resnet32")
    assert first.lr == second.lr == 0.1
    path.write_text("students: [{passes: 2}, {pases: 4}]\n")
    with pytest.raises(UserError, match=r"unknown config key students\[1\]\.pases"):
        load_config(SelfTrainConfig, str(path))
    path.write_text("students: [{seed: 3}]\n")
    with pytest.raises(UserError, match=r"students\[0\]\.seed is shared"):
        load_config(SelfTrainConfig, str(path))
    path.write_text("students: [passes]\n")
    with pytest.raises(UserError, match="students must be a list of mappings"):
        load_config(SelfTrainConfig, str(path))
