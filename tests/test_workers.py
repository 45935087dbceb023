"""The suite's parallel workers cannot see each other's processes (conftest.py)."""

from __future__ import annotations

import os

import psutil
import pytest
from conftest import _can_isolate_workers


def test_a_worker_sees_only_its_own_processes() -> None:
    if "PYTEST_XDIST_WORKER" not in os.environ:
        pytest.skip("not run by a pytest-xdist worker (pytest -n)")
    if not _can_isolate_workers():
        pytest.skip("workers share /proc without root and unshare(1)")
    me = psutil.Process()
    mine = {me.pid} | {child.pid for child in me.children(recursive=True)}
    # The PID namespace's init may be unshare's child (this worker) or, on
    # other unshare versions, a parent of it: allow this worker's ancestors.
    ancestors = {parent.pid for parent in me.parents()}
    foreign = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.pid not in mine and process.pid not in ancestors:
            foreign.append((process.pid, process.info["name"]))
    assert foreign == []
