"""Plain values shaped like what the agent observes, for tests that need facts
without a network: one place, so every test builds them the same way."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Optional

from agent.config.types import TargetConfig
from agent.model import ApiserverProcess, LivezVerdict, LoopbackCert, ProbeResult


def target_config(name: str = "kube-apiserver", **changes: Any) -> TargetConfig:
    values: dict[str, Any] = {
        "name": name,
        "process_name": "kube-apiserver",
        "host": "",
        "port": 0,
        "server_name": "apiserver-loopback-client",
        "timeout": timedelta(seconds=5),
        "lifetime": None,
    }
    values.update(changes)
    return TargetConfig(**values)


def apiserver_process(started_at: datetime, pid: int = 4242) -> ApiserverProcess:
    return ApiserverProcess(
        pid=pid, name="kube-apiserver", started_at=started_at, secure_port=6443, bind_address=None
    )


def loopback_cert(
    generated: datetime, lifetime: timedelta, serial: str = "2a", sha256: str = "cd" * 32
) -> LoopbackCert:
    """Shaped like upstream's: CN with the generation time, not_before one
    hour earlier, whole seconds."""
    generated = generated.replace(microsecond=0)
    return LoopbackCert(
        subject=f"CN=apiserver-loopback-client@{int(generated.timestamp())}",
        issuer=f"CN=apiserver-loopback-client-ca@{int(generated.timestamp())}",
        serial=serial,
        sha256=sha256,
        not_before=generated - timedelta(hours=1),
        not_after=generated - timedelta(hours=1) + lifetime,
        generated_at=generated,
    )


def probe_result(cert: Optional[LoopbackCert], livez: LivezVerdict = "absent") -> ProbeResult:
    return ProbeResult(
        host="127.0.0.1",
        port=6443,
        server_name="apiserver-loopback-client",
        cert=cert,
        livez=livez,
        error=None if cert is not None else "connection refused",
    )
