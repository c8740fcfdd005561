"""``python -m noisystudent.deploy MODEL.onnx IMAGE... [--top-k K] [--json]``: predictions from
an exported model without torch, printed as ``noisystudent predict RUN_DIR IMAGE...`` prints
them; the two commands share their arguments (``add_prediction_arguments``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from noisystudent.core.errors import UserError


def add_prediction_arguments(parser: argparse.ArgumentParser) -> None:
    """The images to classify and how to print the answer, after the model's argument."""
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--top-k", type=int, default=1, help="also list the next k-1 classes")
    parser.add_argument("--json", action="store_true", help="print JSON instead of lines")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m noisystudent.deploy",
                                     description="Classify images with an exported model.onnx.")
    parser.add_argument("model", metavar="MODEL.onnx")
    add_prediction_arguments(parser)
    args = parser.parse_args(argv)
    from .onnx_runtime import format_predictions, predict_onnx  # numpy: after parsing

    try:
        print(format_predictions(predict_onnx(args.model, args.images, args.top_k), args.json))
    except UserError as err:
        print(f"noisystudent: error: {err}", file=sys.stderr)
        return 2
    return 0
