"""The ``noisystudent`` command: each subcommand is a thin wrapper over the Python function of
the same name. Bad input prints one line and exits with code 2, never a traceback."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import typing
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from .core.errors import UserError
from .deploy.cli import add_prediction_arguments

EXIT_USAGE = 2
log = logging.getLogger(__name__)


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--flag`` per setting, with its help and default; a section's settings as
    ``--section.flag`` in a group of their own. Only the flags given override."""
    dests = _add_settings(parser.add_argument_group("settings (override --config; defaults in "
                                                    "brackets)"), cls, "")
    for name, info in cls.model_fields.items():
        section = _section(info)
        if section is not None:
            group = parser.add_argument_group(f"{name} settings ({info.description})")
            dests += _add_settings(group, section, name + ".",
                                   flag_prefix=name.replace("_", "-") + ".")
    parser.set_defaults(config_flags=dests)
    parser.add_argument("--set", dest="dotted", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, dotted for nested sections (repeatable)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved settings as YAML (what config.yaml will hold) "
                        "and exit")


def _section(info) -> type | None:
    """The settings model of a section field (``teacher``, ``student``, ``finetune``, ...);
    None for a plain setting and for a list of sections (``students``: YAML only)."""
    from pydantic import BaseModel

    if typing.get_origin(info.annotation) is list:
        return None
    for kind in (info.annotation, *typing.get_args(info.annotation)):
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind
    return None


def _sections_list(info) -> bool:
    """A list of sections (``students``): set in the YAML file, no flags."""
    from pydantic import BaseModel

    return typing.get_origin(info.annotation) is list and any(
        isinstance(a, type) and issubclass(a, BaseModel) for a in typing.get_args(info.annotation))


def _add_settings(group, cls: type, prefix: str, flag_prefix: str = "") -> list[str]:
    """The flags of one model's plain settings; returns their dests (``section.key``).
    Sections of overrides (``finetune``) show what an unset key falls back to."""
    overrides = "Overrides" in cls.__name__
    dests = []
    for name, info in cls.model_fields.items():
        kind = info.annotation
        if _section(info) is not None or _sections_list(info):
            continue
        flag = "--" + flag_prefix + name.replace("_", "-")
        default = "unset: see the section" if overrides else \
            info.get_default(call_default_factory=True)
        help_text = f"{info.description} [{default}]"
        if kind is bool or kind == bool | None:
            group.add_argument(flag, dest=prefix + name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(flag, dest=prefix + name, default=argparse.SUPPRESS,
                               metavar=_metavar(kind), help=help_text)
        dests.append(prefix + name)
    return dests


def _metavar(kind: Any) -> str:
    choices = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) is typing.Literal:
        return "{" + ",".join(map(str, choices)) + "}"
    if typing.get_origin(kind) is list:
        return "A,B,..."
    if typing.get_origin(kind) is dict:
        return "KEY=VALUE,..."
    if choices:  # X | None
        return _metavar(choices[0])
    return getattr(kind, "__name__", "VALUE").upper()


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, dotted keys for sections."""
    given = vars(args)
    overrides = {dest: given[dest] for dest in args.config_flags if dest in given}
    for item in args.dotted:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = value
    return overrides


def resolve_config(args: argparse.Namespace, config_cls: type, planner: Callable | None = None):
    """The config a command runs with: defaults < --config < flags; with --resume, the run's
    saved config.yaml (None: the run reopens it). --print-config prints it instead.
    ``planner(values)`` (self-train) fills the unset values: (config, the plan), and
    ``args.plan`` keeps the plan."""
    from .core.settings_io import apply_overrides, build, load_config, read_yaml, to_dict
    overrides = config_overrides(args)
    if args.out is None and (getattr(args, "resume", False) or not args.print_config):
        raise UserError("the following argument is required: --out RUN_DIR "
                        "(only --print-config runs without it)")
    if getattr(args, "resume", False):
        if overrides or args.config:
            log.warning("note: --resume continues with the run's saved config.yaml; "
                        "other settings ignored")
        if not args.print_config:
            return None
        config = build(config_cls, read_yaml(os.path.join(args.out, "config.yaml")))
    elif planner is not None:
        from .plan import annotated_yaml

        config, args.plan = planner(apply_overrides(
            read_yaml(args.config) if args.config else {}, overrides))
        if args.print_config:
            print(annotated_yaml(to_dict(config), args.plan), end="")
            raise PrintedConfig
        log.info("plan: %s; %d values planned, reasons in %s/plan.yaml (see --print-config)",
                 args.plan.facts.describe(), len(args.plan.values), args.out)
    else:
        config = load_config(config_cls, args.config, overrides)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
        raise PrintedConfig
    return config


class PrintedConfig(Exception):
    """--print-config: the settings are printed and the command stops there (exit 0)."""


def run_training(args: argparse.Namespace, config_cls: type, function: Callable) -> None:
    """train and distill: settings from defaults < --config < flags, then the function."""
    config = resolve_config(args, config_cls)
    metrics = function(config, args.out, resume=args.resume, quiet=args.quiet)
    top1 = metrics["test_top1"]
    print(f"test top-1: {top1:.4f}" if top1 is not None else "no test set", f"-> {args.out}")


def cmd_train(args: argparse.Namespace) -> None:
    from noisystudent.stages.train import train

    from .core.config import TrainConfig

    run_training(args, TrainConfig, train)


def cmd_distill(args: argparse.Namespace) -> None:
    from noisystudent.stages.distill import distill

    from .core.config import DistillConfig

    run_training(args, DistillConfig, distill)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from noisystudent.reports.evaluate import evaluate, evaluate_exported

    if is_onnx(args.run_dir):
        if args.corruptions:
            raise UserError("--corruptions measures a run directory, not an exported .onnx file")
        result = evaluate_exported(args.run_dir, quiet=args.quiet)
    else:
        result = evaluate(args.run_dir, device=args.device, quiet=args.quiet,
                          corruptions=args.corruptions, baseline=args.baseline,
                          corruption_images=args.corruption_images)
    print(f"test top-1: {result['top1']:.4f}  ECE: {result['ece']:.4f}  "
          f"({result['test_images']} images)")
    for name, acc in result["per_class"].items():
        print(f"  {name:<16} {acc:.4f}")
    print(f"wrote {result['files'][0]} and {result['files'][1]}")
    if args.corruptions:
        measured = result["corruptions"]
        print(f"corruptions ({measured['images']} images each): clean error "
              f"{measured['clean_error']:.4f}, mean corruption error {measured['mean_error']:.4f}"
              + (f", mCE {measured['mce']:.1f} vs {args.baseline}" if args.baseline else ""))
        for name, errors in measured["errors"].items():
            print(f"  {name:<18} " + " ".join(f"{e:.3f}" for e in errors))
        print(f"wrote {args.run_dir}/corruptions.json")


def is_onnx(path: str) -> bool:
    return path.lower().endswith(".onnx")


def cmd_export(args: argparse.Namespace) -> None:
    from noisystudent.deploy.export import export_onnx

    result = export_onnx(args.run_dir, args.out)
    print(f"wrote {result['path']} (max |logit difference| to PyTorch "
          f"{result['max_logit_difference']:.1e})")


def cmd_pseudo_label(args: argparse.Namespace) -> None:
    from pathlib import Path

    from noisystudent.labels.to_label import TO_LABEL_CSV
    from noisystudent.stages.pseudo_label import pseudo_label

    from .core.config import PseudoLabelConfig

    config = resolve_config(args, PseudoLabelConfig)
    summary = pseudo_label(args.teacher, args.out, config, unlabeled=args.unlabeled,
                           quiet=args.quiet)
    accuracy = summary["pseudo_label_accuracy"]
    print(f"selected {summary['selected']} of {summary['unlabeled_images']} images "
          f"(mean confidence {summary['mean_confidence']:.3f}"
          + (f", teacher accuracy on them {accuracy:.4f}" if accuracy is not None else "")
          + (f"; {summary['skipped']} unreadable skipped" if summary.get("skipped") else "")
          + f") -> {args.out}")
    if summary.get("to_label"):
        print(f"the {summary['to_label']} images to label next: {Path(args.out) / TO_LABEL_CSV} "
              "(fill in the label column, then pass it to --extra-labeled)")


def cmd_self_train(args: argparse.Namespace) -> None:
    from noisystudent.stages.selftrain import self_train

    from .core.config import SelfTrainConfig
    from .plan import planned_config

    config = resolve_config(args, SelfTrainConfig, planned_config)
    report = self_train(config, args.out, resume=args.resume, quiet=args.quiet,
                        planned=getattr(args, "plan", None))
    top1 = report["final_test_top1"]
    print(("no test set" if top1 is None else f"final test top-1: {top1:.4f}")
          + f" ({report.get('final_role', 'the last model')}, kept); "
          f"report: {args.out}/report.md")


def cmd_pack(args: argparse.Namespace) -> None:
    from noisystudent.data.arrays import pack_folder

    if not args.out.endswith(".npy"):
        raise UserError(f"--out must end in .npy, got {args.out}")
    result = pack_folder(args.folder, args.out, args.image_size, args.channels)
    print(f"packed {result['images']} images {tuple(result['shape'][1:])} "
          f"({result['skipped']} skipped) -> {args.out}")


def cmd_predict(args: argparse.Namespace) -> None:
    from noisystudent.deploy.onnx_runtime import format_predictions, predict_onnx

    if is_onnx(args.run_dir):
        results = predict_onnx(args.run_dir, args.images, top_k=args.top_k)
    else:
        from noisystudent.deploy.predict import predict

        results = predict(args.run_dir, args.images, device=args.device, top_k=args.top_k)
    print(format_predictions(results, args.json))


def cmd_review(args: argparse.Namespace) -> None:
    from noisystudent.reports.review import review

    result = review(args.run_dir, device=args.device)
    print(f"wrote {result['path']} ({result['bytes'] / 1e6:.2f} MB in "
          f"{result['seconds']:.1f} s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="noisystudent",
        description="Transfer learning, knowledge distillation and Noisy Student self-training.",
        epilog="Data-parallel on several processes or GPUs: torchrun --nproc_per_node=N -m "
               "noisystudent COMMAND ... (batch_size is the global batch; docs/scaling.md).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    try:
        from .core.config import DistillConfig, PseudoLabelConfig, SelfTrainConfig, TrainConfig
    except ImportError:  # an install for predictions from .onnx files only (no pydantic)
        DistillConfig = PseudoLabelConfig = SelfTrainConfig = TrainConfig = None

    add_training_commands(sub, TrainConfig, DistillConfig, PseudoLabelConfig, SelfTrainConfig)
    add_model_commands(sub)
    return parser


def add_training_commands(sub, train_config, distill_config, label_config,
                          selftrain_config) -> None:
    """train, distill, pseudo-label and self-train: the commands that write a run (their
    settings' classes, or None where pydantic is missing)."""
    train = command(sub, "train", cmd_train, train_config,
                    "fine-tune a pretrained model on a few labels",
                    description="Supervised transfer learning into a run directory.")
    distill = command(sub, "distill", cmd_distill, distill_config,
                      "train a student to mimic a trained teacher",
                      description=("Knowledge distillation: KL to the teacher's softened outputs "
                                   "(x T^2) plus cross-entropy on true labels, on labeled, "
                                   "unlabeled or both kinds of images."))
    for run in (train, distill):
        run.add_argument("--out", metavar="RUN_DIR", help="run directory to write")
        run.add_argument("--config", metavar="FILE.yaml", help="YAML settings (plain data)")
        run.add_argument("--resume", action="store_true",
                         help="continue an interrupted run in --out from its last checkpoint")

    label = command(sub, "pseudo-label", cmd_pseudo_label, label_config,
                    "a clean teacher labels unlabeled images",
                    description=("Teacher inference on clean views: soft or hard labels, a "
                                 "confidence threshold and per-class balancing."))
    label.add_argument("--teacher", required=True, metavar="RUN_DIR")
    label.add_argument("--out", required=True, metavar="DIR")
    label.add_argument("--unlabeled", metavar="PATH",
                       help="tar shards (a brace pattern such as 'shards/{0000..0099}.tar', "
                       "or a folder of .tar files), a folder of images or a Hugging Face "
                       "dataset (saved, Parquet or hf:NAME), decoded in loader "
                       "workers; or a .npy made by 'pack' (read from disk); default: the "
                       "teacher run's unlabeled split")
    label.add_argument("--config", metavar="FILE.yaml", help="YAML settings (plain data)")

    selftrain = command(sub, "self-train", cmd_self_train, selftrain_config,
                        "the Noisy Student loop: --budget plans it, a YAML config optional",
                        description=("Teacher -> pseudo-labels -> noised student -> student "
                                     "becomes teacher, for K iterations; resumable. Each "
                                     "iteration's student overrides (students: [...]) are set in "
                                     "the YAML file."))
    selftrain.add_argument("config", nargs="?", metavar="CONFIG.yaml",
                           help="self-training settings (see configs/)")
    selftrain.add_argument("--out", metavar="RUN_DIR", help="run directory to write")
    selftrain.add_argument("--resume", action="store_true",
                           help="continue an interrupted run; finished steps are not redone")



def add_model_commands(sub) -> None:
    """evaluate, review, pack, predict and export: the commands that read a finished run or
    its model."""
    evaluate = command(sub, "evaluate", cmd_evaluate, None,
                       "test accuracy, confusion matrix, calibration",
                       description=("Evaluate a run directory, or an exported .onnx file (through "
                                    "ONNX Runtime) on the test set of the run it came from."),
                       device=True)
    evaluate.add_argument("run_dir", metavar="RUN_DIR|MODEL.onnx")
    evaluate.add_argument("--corruptions", action="store_true",
                          help="also error per corruption (15 types x 5 severities) and mCE")
    evaluate.add_argument("--baseline", metavar="RUN_DIR",
                          help="run whose corruption errors count as mCE = 100")
    evaluate.add_argument("--corruption-images", type=int, default=0, metavar="N",
                          help="corrupt only the first N test images (0 = all)")

    review = command(sub, "review", cmd_review, None,
                     "report.html: what a run learned from, as pictures",
                     description=("One self-contained page for a finished run: self-train "
                                  "(iterations, each labeling's most and least confident images "
                                  "per class, confident mistakes, changed labels, test confusion, "
                                  "corrupted images, the images to label next), pseudo-label, "
                                  "train or distill."),
                     quiet=False, device=True)
    review.add_argument("run_dir", metavar="RUN_DIR",
                        help="a finished run's directory; the page is written into it")

    pack = command(sub, "pack", cmd_pack, None,
                   "decode a folder of unlabeled images into one .npy",
                   description=("Decode once into a uint8 (N, C, S, S) .npy that pseudo-labeling "
                                "and students stream from disk in blocks."), quiet=False)
    pack.add_argument("folder", metavar="FOLDER")
    pack.add_argument("--out", required=True, metavar="FILE.npy")
    pack.add_argument("--image-size", type=int, required=True, metavar="S",
                      help="the teacher's stored size (model.json stored_size)")
    pack.add_argument("--channels", type=int, default=3, choices=(1, 3))

    predict = command(sub, "predict", cmd_predict, None, "class and probability for image files",
                      description=("From a run directory, or an exported .onnx file (through ONNX "
                                   "Runtime)."),
                      quiet=False, device=True)
    predict.add_argument("run_dir", metavar="RUN_DIR|MODEL.onnx")
    add_prediction_arguments(predict)

    export = command(sub, "export", cmd_export, None,
                     "the run's model as ONNX, preprocessing included",
                     description=("uint8 images in, logits out; class names and the stored size "
                                  "in the metadata; dynamic batch. Needs pip install "
                                  "-e '.[export]' in this checkout."))
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--format", default="onnx", choices=("onnx",))
    export.add_argument("--out", metavar="FILE.onnx", help="default: RUN_DIR/model.onnx")


def command(sub, name: str, func: Callable, config_cls: type | None, summary: str, *,
            description: str, quiet: bool = True, device: bool = False):
    """A subcommand with its function, its settings' flags (when it has a config) and the
    flags several commands share."""
    parser = sub.add_parser(name, help=summary, description=description)
    parser.set_defaults(func=func)
    if quiet:
        parser.add_argument("--quiet", action="store_true", help="no progress or status lines")
    if device:
        parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    if config_cls is not None:
        add_config_flags(parser, config_cls)
    return parser


def run_safely(func: Callable[[], None]) -> int:
    """Turn the expected failures into one line on stderr and exit code 2."""
    try:
        func()
    except PrintedConfig:
        return 0
    except UserError as err:
        print(f"noisystudent: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("noisystudent: interrupted; continue with --resume", file=sys.stderr)
        return 130
    return 0


def _warning_line(message, *_) -> None:
    # Warnings meant for the user (e.g. skipped unreadable images) as one plain line.
    print(f"noisystudent: warning: {message}", file=sys.stderr)


def setup_logging(quiet: bool) -> None:
    """Status lines of the ``noisystudent`` loggers on stderr; --quiet keeps only warnings."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("noisystudent")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _warning_line
    setup_logging(getattr(args, "quiet", False))
    if args.command == "predict" and is_onnx(args.run_dir):
        # ONNX Runtime, numpy and Pillow only: this runs where torch is not installed.
        return run_safely(lambda: args.func(args))
    try:
        from .core import distributed  # imports torch: after parsing, so --help stays quick
    except ImportError as err:
        print(f"noisystudent: error: {err.name} is not installed; '{args.command}' needs the "
              "full install (pip install noisystudent); predictions from an exported .onnx "
              "file need only onnxruntime, numpy and pillow", file=sys.stderr)
        return EXIT_USAGE

    from .core.device import flush_denormals

    flush_denormals()  # before any torch thread starts: they inherit it
    distributed.setup()  # under torchrun: join the process group
    if not distributed.is_main():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (one summary line, from rank 0)
    try:
        return run_safely(lambda: args.func(args))
    finally:
        distributed.teardown()


if __name__ == "__main__":
    sys.exit(main())
