"""Entry script for ``corral bench volume`` on a node (run as ``python benchmarks/volume_worker.py ...``).

A script rather than ``-m`` so the launch path can run it like any training script; it puts the
repository root on ``sys.path`` and hands over to :mod:`benchmarks.volume.worker`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.volume.worker import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
