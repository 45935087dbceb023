"""Fuzz: an apiserver's command line → --secure-port and --bind-address.

Properties: read_flags never raises, gives a port in 1..65535 or None and an
IP in canonical form or None; a `--secure-port=6443` appended after any argv
(without "--") wins, as pflag's last value does; and a real child process
started with a fuzzed argv (spaces, newlines, non-UTF-8 bytes) is found by
the ProcessFinder with the port read_flags reads from that same argv.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

from fuzzing import inputs
from hypothesis import given
from hypothesis import strategies as st

from agent.model import DEFAULT_SECURE_PORT
from agent.observe.discover import ProcessFinder
from agent.observe.flags import flag_values, read_flags

_FLAGS = [
    "--secure-port",
    "--secure_port",
    "--bind-address",
    "--bind_address",
    "--",
    "-secure-port",
]
_values = st.one_of(
    st.sampled_from(["6443", "0x1A0B", "014453", "0", "65536", "-1", "+443", " 443", "٦٤٤٣"]),
    st.sampled_from(["127.0.0.1", "::1", "[::1]", " 10.0.0.1 ", "0.0.0.0", "::ffff:1.2.3.4", ""]),
    st.integers(-(2**70), 2**70).map(str),
    st.text(max_size=12),
)
_args = st.one_of(
    st.sampled_from(_FLAGS),
    st.builds("{}={}".format, st.sampled_from(_FLAGS), _values),
    _values,
)
argvs = st.lists(_args, max_size=8).map(lambda rest: ["kube-apiserver", *rest])


def _check(port: Optional[int], address: Optional[str]) -> None:
    assert port is None or 1 <= port <= 65535
    if address is not None:
        assert str(ipaddress.ip_address(address)) == address


@inputs(3000)
@given(argvs)
def test_flags_are_read_or_left_out(argv: List[str]) -> None:
    flags = read_flags(argv)
    _check(flags.port, flags.bind_address)
    if "--" not in argv:
        assert read_flags([*argv, "--unrelated", "--secure-port=6443"]).port == 6443


# A child's argv may hold any bytes but NUL; psutil decodes what is not UTF-8.
_raw_args = st.lists(
    st.one_of(_args, st.binary(max_size=12).map(os.fsdecode)).map(
        lambda arg: arg.replace("\0", "")
    ),
    max_size=6,
)


def _found_port(name: str, argv: Sequence[str]) -> Optional[int]:
    with tempfile.TemporaryDirectory() as directory:
        link = Path(directory) / name
        link.symlink_to(sys.executable)
        # The kernel names the process after the link; the child runs long
        # enough to be read and is killed and reaped at once.
        child = subprocess.Popen(
            [str(link), "-c", "import time; time.sleep(30)", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # The kernel renames the child before its new argv is readable.
            proc = Path(f"/proc/{child.pid}")
            for _ in range(500):
                if (proc / "comm").read_text().strip() == name[:15] and (
                    proc / "cmdline"
                ).read_bytes():
                    break
                time.sleep(0.01)
            discovery = ProcessFinder().find(name, None)
        finally:
            child.kill()
            child.wait(timeout=10)
    assert discovery.error is None, discovery.error
    assert discovery.process is not None and discovery.process.pid == child.pid
    return discovery.process.secure_port


@inputs(1000)
@given(_raw_args)
def test_a_real_process_with_any_argv_is_found_with_its_port(args: List[str]) -> None:
    name = "klgfz-" + os.urandom(4).hex()
    argv = [name, "-c", "import time; time.sleep(30)", *args]
    expected = read_flags(argv).port
    if "secure-port" not in flag_values(argv):
        expected = DEFAULT_SECURE_PORT  # absent, not refused: the default applies
    assert _found_port(name, args) == expected
