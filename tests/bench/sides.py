"""The sides the benchmark measures: our check, the TLS floors under it, and
the tools operators would run instead, each against the same stand-in
apiserver on 127.0.0.1. Every process started here is stopped by its PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Callable, Dict, List, Optional, Sequence

SNI = "apiserver-loopback-client"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGINS = "/usr/lib/nagios/plugins"
Sample = Callable[[], None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Processes:
    """Every process the benchmark starts, so that all are stopped at the end."""

    def __init__(self) -> None:
        self.started: List[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        process: subprocess.Popen[bytes] = subprocess.Popen(list(argv), **kwargs)  # type: ignore[call-overload]
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()

    def stop_all(self) -> None:
        for process in reversed(self.started):
            self.stop(process)
        self.started.clear()


def start_standin(processes: Processes, expires_in: str = "40d") -> int:
    """Start a stand-in apiserver (its own process, so its CPU is not ours);
    return its port."""
    process = processes.start(
        [sys.executable, "-m", "agent.standin", "--secure-port=0", f"--expires-in={expires_in}"],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()  # "listening on 127.0.0.1:PORT"
    return int(line.rsplit(":", 1)[1])


# Our own stand-in for the apiserver process, under a name no other process on
# the machine has (a test suite elsewhere may run processes named
# kube-apiserver): discovery then finds exactly one, every time.
APISERVER_NAME = "kube-bench-api"


def start_named_process(processes: Processes, directory: str) -> str:
    """Start `sleep` under APISERVER_NAME (its comm and argv[0]); return the name."""
    link = os.path.join(directory, APISERVER_NAME)
    sleep = shutil.which("sleep")
    assert sleep is not None
    os.symlink(sleep, link)
    processes.start([link, "3600"], stdout=subprocess.DEVNULL)
    return APISERVER_NAME


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- in-process sides ---------------------------------------------------------


def _context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def handshake(port: int) -> Sample:
    """A bare TLS handshake with the loopback SNI, reading the peer certificate."""
    context = _context()

    def sample() -> None:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=SNI) as tls,
        ):
            assert tls.getpeercert(binary_form=True)

    return sample


def handshake_livez(port: int) -> Sample:
    """The handshake plus the GET of /livez?verbose (what our probe reads) on the same
    connection, read to the end: the least any probe of ours must do."""
    context = _context()
    request = (f"GET /livez?verbose HTTP/1.1\r\nHost: {SNI}\r\nConnection: close\r\n\r\n").encode()

    def sample() -> None:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=SNI) as tls,
        ):
            assert tls.getpeercert(binary_form=True)
            tls.sendall(request)
            while tls.recv(65536):
                pass

    return sample


def in_process_check(port: int, process_name: str = "") -> Sample:
    """Our check of one target (probe and assessment; discovery too when a
    process name is given), as `check` and the daemon run it."""
    from datetime import datetime, timedelta, timezone

    from builders import target_config

    from agent.check import run_check
    from agent.config.types import Thresholds
    from agent.observe.discover import ProcessFinder
    from agent.observe.probe import probe

    targets = [target_config("api", process_name=process_name, host="127.0.0.1", port=port)]
    thresholds = Thresholds(warning=timedelta(days=60), critical=timedelta(days=14))
    finder = ProcessFinder()

    def sample() -> None:
        report = run_check(targets, thresholds, finder, probe, lambda: datetime.now(timezone.utc))
        assert report.targets[0].facts.probe is not None
        assert report.targets[0].facts.probe.cert is not None

    return sample


# --- other processes ----------------------------------------------------------


class NotWorking(Exception):
    """A peer tool that runs but does not read the certificate here."""


def working(argv: Sequence[str], expect: str, shell: bool = False) -> Sample:
    """A command, once run to see that its output says `expect` (a tool that
    fails fast would otherwise look fast); raise NotWorking if not."""
    result = subprocess.run(
        argv if not shell else argv[0],
        shell=shell,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if expect not in result.stdout:
        said = (result.stdout or result.stderr).strip().splitlines()
        raise NotWorking(said[0] if said else f"exit {result.returncode}, no output")
    return command(argv, shell)


def command(argv: Sequence[str], shell: bool = False) -> Sample:
    def sample() -> None:
        subprocess.run(
            argv if not shell else argv[0],
            shell=shell,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )

    return sample


def openssl_pipeline(port: int) -> Optional[Sample]:
    """What a cron job does: `openssl s_client | openssl x509 -enddate`."""
    if shutil.which("openssl") is None:
        return None
    return working(
        [
            f"openssl s_client -connect 127.0.0.1:{port} -servername {SNI} </dev/null "
            "2>/dev/null | openssl x509 -noout -enddate"
        ],
        "notAfter=",
        shell=True,
    )


def check_http(port: int) -> Optional[Sample]:
    """monitoring-plugins' check_http in the form that sends the loopback SNI."""
    path = os.path.join(PLUGINS, "check_http")
    if not os.access(path, os.X_OK):
        return None
    argv = [path, "-I", "127.0.0.1", "-p", str(port), "-H", SNI, "--sni", "-S", "-C", "60,14"]
    return working(argv, f"Certificate '{SNI}@")


def check_ssl_cert(port: int) -> Optional[Sample]:
    """check_ssl_cert (monitoring-plugins-contrib): -A because the loopback CA
    is self-signed, --ignore-sct because no private certificate has SCTs;
    never --ignore-exp, which switches the thresholds off. It needs `host`
    (bind9-host)."""
    path = os.path.join(PLUGINS, "check_ssl_cert")
    if not os.access(path, os.X_OK):
        return None
    argv = [path, "-H", "127.0.0.1", "-p", str(port), "--sni", SNI, "-A", "--ignore-sct"]
    return working([*argv, "-w", "60", "-c", "14"], "days_chain_elem1=")


BLACKBOX_CONFIG = f"""modules:
  loopback:
    prober: tcp
    timeout: 5s
    tcp:
      tls: true
      tls_config:
        insecure_skip_verify: true
        server_name: {SNI}
"""


class Blackbox:
    """prometheus-blackbox-exporter with a tcp+tls module for the loopback SNI."""

    def __init__(self, processes: Processes, target_port: int) -> None:
        self.directory = tempfile.mkdtemp(prefix="klg-bench-bbe-")
        config = os.path.join(self.directory, "blackbox.yml")
        with open(config, "w") as handle:
            handle.write(BLACKBOX_CONFIG)
        self.port = free_port()
        self.process = processes.start(
            [
                "prometheus-blackbox-exporter",
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = (
            f"http://127.0.0.1:{self.port}/probe?module=loopback&target=127.0.0.1:{target_port}"
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                self.probe()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.1)

    def probe(self) -> None:
        with urllib.request.urlopen(self.url, timeout=5) as response:
            body = response.read()
        assert b"probe_success 1" in body, body[-300:]

    def rss_mib(self) -> float:
        return rss_mib(self.process.pid)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    @staticmethod
    def installed() -> bool:
        return shutil.which("prometheus-blackbox-exporter") is not None


def cold_commands(config_path: str) -> Dict[str, Sample]:
    """A fresh `kube-loopback-guard check`, and the floor under it: a fresh
    interpreter importing only what any such check must (psutil, ssl, x509)."""
    return {
        "cold_check_ms": command([sys.executable, "-m", "agent", "check", "--config", config_path]),
        "import_floor_ms": command([sys.executable, "-c", "import psutil, ssl, cryptography.x509"]),
    }
