"""``python -m noisystudent.deploy MODEL.onnx IMAGE...``: predictions from an exported model,
without torch."""

import sys

from .onnx_runtime import main

sys.exit(main())
