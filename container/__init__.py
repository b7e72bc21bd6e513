"""Container run configurations (InfiniBand devices, NCCL mounts) and running jobs inside them."""
