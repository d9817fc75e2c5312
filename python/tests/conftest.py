"""Where the tests find the built package, the fixtures and the CLI (CTest sets these)."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("CANDELA_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
BUILD = os.environ.get("CANDELA_BUILD_DIR", os.path.join(SOURCE, "build"))
# CANDELA_FIXTURE_DIR: scripts/check-portability.sh points every suite at fixtures it retrained.
FIXTURES = os.environ.get("CANDELA_FIXTURE_DIR", os.path.join(BUILD, "fixtures"))
CLI = os.environ.get("CANDELA_CLI", os.path.join(BUILD, "bin", "candela"))
if os.path.join(BUILD, "python") not in sys.path:
    sys.path.insert(0, os.path.join(BUILD, "python"))


def fixture(name):
    return os.path.join(FIXTURES, name)


def reference(name):
    return os.path.join(SOURCE, "tests", "reference", name)


@pytest.fixture(scope="session")
def digits():
    import torch
    return torch.jit.load(fixture("digits_cnn.pt"))


@pytest.fixture(scope="session")
def digits_x():
    import numpy as np
    import torch
    return torch.from_numpy(np.load(fixture("digits_test.npy"))[:2].copy())
