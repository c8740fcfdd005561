"""``python -m noisystudent`` (and ``torchrun -m noisystudent``) runs the CLI."""

import sys

from .cli import main

sys.exit(main())
