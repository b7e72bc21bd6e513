"""corral: launch distributed training across GPU nodes inside tmux, and benchmark them.

The package is import-light on purpose: ``corral --help`` must not import torch,
docker or pynvml. Heavy modules are imported inside the functions that need them.
"""

__version__ = "0.1.0"
