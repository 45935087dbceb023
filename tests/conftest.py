"""Shared fixtures: stand-in apiservers on the loopback interface."""

from __future__ import annotations

import socket
from typing import Any, Callable, Iterator, List

import pytest

from agent.standin import StandinApiserver

StandinFactory = Callable[..., StandinApiserver]


@pytest.fixture
def standin() -> Iterator[StandinFactory]:
    """Return a factory of started StandinApiservers (P-256 keys unless asked),
    all closed at teardown."""
    servers: List[StandinApiserver] = []

    def make(**options: Any) -> StandinApiserver:
        options.setdefault("key_type", "ec")
        server = StandinApiserver(**options)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.close()


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def ipv6_loopback() -> str:
    """Return "::1", or skip the test on a machine without an IPv6 loopback."""
    if not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback (::1) on this machine")
    return "::1"
