"""Benchmarks run by ``corral bench``: collective bandwidth, network, volume, node acceptance."""
