"""Tests for agent.standin.process: the stand-in as a process, with the modes
its command line exposes, probed by the agent's own probe."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from typing import Iterator, List, Tuple

import pytest

from agent.model import LOOPBACK_SERVER_NAME
from agent.observe.probe import probe


@contextlib.contextmanager
def _serve(*flags: str) -> Iterator[Tuple[str, int]]:
    child = subprocess.Popen(
        [sys.executable, "-m", "agent.standin", "--secure-port=0", "--key-type=ec", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().decode()
        assert line.startswith("listening on "), child.stderr.read() if child.stderr else line
        host, _, port = line.split()[-1].rpartition(":")
        yield host, int(port)
    finally:
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=10) == 0


@pytest.mark.parametrize(
    ("flags", "livez"),
    [
        ([], "ok"),
        (["--anonymous-auth=false"], "forbidden"),
        (["--livez=pre-1.36"], "absent"),
        (["--livez=failed"], "failed"),
        (["--expires-in=-3d"], "failed"),
        # kube-apiserver flags it does not model are ignored.
        (["--anonymous-auth", "true", "--authorization-mode=Node,RBAC"], "ok"),
    ],
)
def test_modes_from_the_command_line(flags: List[str], livez: str) -> None:
    with _serve(*flags) as (host, port):
        result = probe(host, port, LOOPBACK_SERVER_NAME, 5.0)
        assert result.cert is not None, result.error
        assert result.livez == livez
