"""gctxseg: train, evaluate and serve 2D medical image segmentation models."""

import time as _time

__version__ = "0.1.0"

# When this process began to run gctxseg: ``gctxseg`` and ``python -m gctxseg`` import the package before anything
# else, so a command's time budget counts from here and its start-up (the imports of torch and the rest) is inside it.
IMPORTED_AT = _time.perf_counter()
