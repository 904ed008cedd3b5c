"""pytest plugin for the wheel matrix (.ci/release test): the tests must have imported the installed fastgrad.

Loaded with `-p installed_plugin`. After collection (the test modules and conftest.py import fastgrad), it
fails the session unless `fastgrad` came from the running interpreter's site-packages, so a source folder on
sys.path can never stand in for the wheel.
"""
from __future__ import annotations

import os
import sys
import sysconfig

import pytest


def pytest_collection_finish(session: pytest.Session) -> None:
    module = sys.modules.get("fastgrad")
    if module is None:
        raise pytest.UsageError("installed_plugin: the tests never imported fastgrad")
    site = os.path.realpath(sysconfig.get_paths()["platlib"])
    where = os.path.realpath(module.__file__ or "")
    if os.path.commonpath([site, where]) != site:
        raise pytest.UsageError(f"installed_plugin: fastgrad was imported from {where}, not from {site}")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"release: the tests import fastgrad from {os.path.dirname(where)}")
