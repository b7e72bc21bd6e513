"""Test infrastructure shared by the tests and ``perf/``: the capped volume (loop-mounted ext4 with a
blkio cap), the golden-file helper, the hostile values for injection tests. (The simulated cluster,
``tests/simcluster.py``, belongs here too.)"""
