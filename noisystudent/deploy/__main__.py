"""``python -m noisystudent.deploy MODEL.onnx IMAGE...``: predictions from an exported model,
without torch."""

import sys

from .cli import main

sys.exit(main())
