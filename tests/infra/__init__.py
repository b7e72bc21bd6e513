"""Test infrastructure shared by the tests and ``perf/``: the simulated cluster (network namespaces with
sshd per node, ``simcluster.py``), a Docker engine per simulated node (``simdocker.py``), a real Slurm
cluster over those nodes (``slurmcluster.py``), the host Docker engine and test image
(``docker_fixtures.py``), the capped volume (loop-mounted ext4 with a blkio cap), the golden-file
helper, the hostile values for injection tests and polling helpers (``waiting.py``)."""
