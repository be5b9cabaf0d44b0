"""Shared fixtures: one stand-in body model per test session (generated into the normal cache once)."""

import pytest


@pytest.fixture(scope="session")
def body():
    from headrep.model.body import BodyModel

    return BodyModel()


@pytest.fixture(scope="session")
def standin_file():
    from headrep.model.standin import standin_path

    return standin_path()


@pytest.fixture
def two_threads():
    """torch on 2 threads for the test (this machine's cores), restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)
