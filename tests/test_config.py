"""Typed settings: YAML as data, coercion and one-line errors, every section typed, old run
directories' config.yaml still load."""

from pathlib import Path

import pytest
import yaml

from noisystudent.core.config import DistillConfig, SelfTrainConfig, StudentConfig, TrainConfig
from noisystudent.core.errors import UserError
from noisystudent.core.settings_io import build, load_config, to_dict

BEFORE = Path(__file__).parent / "data" / "configs-before-pydantic"


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
                                        .glob("**/*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path):
    config = load_config(SelfTrainConfig, str(path))
    for k in range(1, config.iterations + 1):
        assert isinstance(config.student_config(k, "labels"), StudentConfig)
    assert isinstance(config.teacher_config(), TrainConfig)
    # What a run saves loads back to the same settings.
    assert build(SelfTrainConfig, yaml.safe_load(yaml.safe_dump(to_dict(config)))) == config


def test_the_final_fine_tune_refines_the_last_student_by_default():
    config = SelfTrainConfig(
        student={"model": "resnet10t", "optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4,
                 "in_chans": 1, "image_size": 28, "batch_size": 32},
        student_models=["cifar_resnet20", "cifar_resnet32"], iterations=2,
        finetune={"epochs": 2})
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


@pytest.mark.parametrize("path", sorted(BEFORE.glob("**/*.yaml")), ids=lambda p: p.name)
def test_config_yaml_written_before_the_typed_settings_still_loads(path):
    """Run directories of the earlier version (sections copied untyped, '--set' values kept
    as strings, finetune: {} for none) load, typed."""
    saved = yaml.safe_load(path.read_text())
    cls = SelfTrainConfig if "iterations" in saved else (
        StudentConfig if "pseudo_labels" in saved else
        DistillConfig if "kd_weight" in saved else TrainConfig)
    config = build(cls, saved)
    if "with-set" in path.name:
        assert config.student.unlabeled_weight == 2.0 and config.teacher.epochs == 3
        assert isinstance(config.teacher.epochs, int)
    if cls is SelfTrainConfig:
        assert config.finetune_config("w.safetensors") is None
        if "cpu-recipe" in path.name:
            assert config.student_config(2, "x").passes == 17.0
            assert config.student_config(1, "x").model == "cifar_resnet20"


def test_a_set_value_is_saved_typed(tmp_path):
    from noisystudent.stages.stage import open_run

    config = load_config(SelfTrainConfig, "configs/smoke.yaml",
                         {"student.unlabeled_weight": "2", "teacher.channels_last": "false"})
    run, _ = open_run(config, tmp_path / "run", False, SelfTrainConfig)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["student"]["unlabeled_weight"] == 2.0
    assert type(saved["student"]["unlabeled_weight"]) is float
    assert saved["teacher"]["channels_last"] is False
    assert saved["students"] == [{"model": "cifar_airbench_s", "model_options": {"flip_tta": True}},
                                 {}]
    assert saved["finetune"] is None


def test_students_entries_are_typed_and_saved_as_given():
    config = build(SelfTrainConfig, {"iterations": 2, "students": [{}, {"passes": "4",
                                                                       "in_chans": "1"}]})
    assert to_dict(config)["students"] == [{}, {"passes": 4.0, "in_chans": 1}]
    second = config.student_config(2, "x")
    assert (second.passes, second.in_chans) == (4.0, 1)


@pytest.mark.parametrize("values,message", [
    ({"student": {"lr": "-1"}}, r"^student\.lr must be in \(0, 10\]; got -1$"),
    ({"teacher": {"optimizer": "lamb"}}, r"^teacher\.optimizer must be one of adamw, sgd"),
    ({"pseudo_label": {"threshold": 2}}, r"^pseudo_label\.threshold must be in \[0, 1\]"),
    ({"pseudo_label": {"seed": 3}}, r"^pseudo_label\.seed is shared by every stage"),
    ({"teacher": {"device": "cpu"}}, r"^teacher\.device is shared by every stage"),
    ({"finetune": {"epochs": "x"}}, r"^finetune\.epochs must be an integer; got 'x'$"),
    ({"finetune": {"pretrained": "w"}}, "finetune.pretrained is always the last student's"),
    ({"students": [{}, {"cutout": 500}]}, r"cutout must be in \[0, 128\].*\(in students\[1\]\)"),
    ({"student": {"warmup_epochs": 9}}, r"warmup_epochs must be in \[0, 5\].*\(in student\)"),
    ({"iterations": 21}, r"^iterations must be in \[0, 20\]; got 21$"),
])
def test_every_section_has_the_same_one_line_errors(values, message):
    with pytest.raises(UserError, match=message) as info:
        build(SelfTrainConfig, values)
    assert "\n" not in str(info.value)
