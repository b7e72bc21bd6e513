"""Test infrastructure shared by tests and ``perf/``: the capped volume (loop-mounted ext4 with a blkio cap)."""
