"""``corral bench node``: GPU inventory, health counters and speed of a node, judged against the model's spec.

probe.py runs on each node (directly, or through the launch path) and writes a raw probe;
nvml_reader.py parses its NVML recording; judge.py turns it into checks; report.py prints them.
"""
