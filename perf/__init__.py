"""The project's measurements of itself (launch latency, harness overhead, checkpoint and volume
engine throughput, the GPU acceptance run), apart from the product: run from the repository root as
``python -m perf.NAME``; not shipped."""
