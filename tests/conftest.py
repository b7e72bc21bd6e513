"""Interim test plumbing (replaced by the simulated-cluster conftest from main): markers and the docker plugin."""

pytest_plugins = ("tests.docker_fixtures",)

MARKERS = {
    "cluster": "needs the simulated multi-node cluster",
    "docker": "needs a reachable Docker engine",
    "gpu": "needs a CUDA GPU",
    "slow": "takes more than a few seconds",
}


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
