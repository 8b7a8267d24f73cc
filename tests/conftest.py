import pytest
import torch

from helpers import data


@pytest.fixture(scope="session")
def mnist_dir():
    """The real MNIST files, fetched offline the way CI does it when missing."""
    return data.ensure_mnist()


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "replica: runs scripts/gpu_replica.sh, the GPU machine's path rehearsed on this CPU "
        "(minutes; skip with -m 'not replica')",
    )
