"""pytest setup: tests marked ``slow`` (longer end-to-end runs) are skipped unless ``--runslow`` is given, and the
property-based battery (``test_properties.py``) draws few, derandomized examples by default and many fresh ones
with ``--runslow``."""

from __future__ import annotations

import pytest
from hypothesis import settings

settings.register_profile("memmix_default", max_examples=8, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("memmix_slow", max_examples=200, deadline=None, print_blob=True)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_configure(config):
    settings.load_profile("memmix_slow" if config.getoption("--runslow") else "memmix_default")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow; run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
