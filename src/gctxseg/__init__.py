"""gctxseg: train, evaluate and serve 2D medical image segmentation models."""

__version__ = "0.1.0"
