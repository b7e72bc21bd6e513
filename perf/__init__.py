"""The project's measurements of itself (launch latency, harness overhead, checkpoint and volume
engine throughput): run from the repository root as ``python -m perf.NAME``; not shipped."""
