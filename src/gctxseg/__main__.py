"""``python -m gctxseg`` (and ``torchrun -m gctxseg train ...``)."""

import sys

from .cli import main

sys.exit(main())
