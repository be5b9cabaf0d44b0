"""Shared fixtures: one stand-in body model per test session (generated into the normal cache once)."""

import pytest


@pytest.fixture(scope="session")
def body():
    from headrep.body import BodyModel

    return BodyModel()


@pytest.fixture(scope="session")
def standin_file():
    from headrep.standin import standin_path

    return standin_path()
