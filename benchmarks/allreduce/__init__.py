"""``corral bench allreduce``: ``maths`` (pure sweep, bandwidth and data-check arithmetic), ``table``
(nccl-tests-style report), ``worker`` (the torchrun worker on every node), ``run`` (validate, launch, collect)."""
