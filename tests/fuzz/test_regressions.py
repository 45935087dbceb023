"""Every failure the fuzz harnesses found, as a named test on its smallest input.

A test marked `xfail(strict=True, raises=…)` pins a defect another change
fixes: it fails today with that exception as the reason says (any other
failure fails the suite), and the day the fix lands it passes, which
strict xfail turns into a failure, so whoever merges the fix removes the mark
here and the defect's entry in fuzzing.KNOWN (from then on the harness fails
on it too). The others pass: the config messages were fixed with the
harnesses; issue 9 items 1, 4, 5, 7 and 14 (the parser part) by hardening;
items 8 and 9 and the API client's Content-Length by net.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Tuple
from unittest import mock

import pytest
from builders import apiserver_process, probe_result, target_config
from conftest import StandinFactory
from cryptography.hazmat.primitives.asymmetric import ec
from der import CN, CertSpec, certificate, key_pem, pem, time_field
from faulty_peers import TlsScriptedPeer
from test_fuzz_certificate import ServingPeer, _one_line_each
from test_fuzz_http import ScriptedPeer
from test_fuzz_kubeconfig import _loopback_only, _nested

from agent.cli import main
from agent.config.durations import parse_utc_time
from agent.config.loader import ConfigError, parse_config
from agent.config.types import Thresholds
from agent.judge.assess import assess
from agent.kube.api import KubeApiClient, KubeApiError
from agent.kube.kubeconfig import ApiCredentials, KubeconfigError, load_kubeconfig
from agent.model import LOOPBACK_SERVER_NAME, LoopbackCert, TargetFacts, TargetReport
from agent.net import http
from agent.net.tls import NetError
from agent.observe import probe as probe_module
from agent.observe.certificate import read_loopback_cert
from agent.state.codec import decode_state, encode_state
from agent.state.records import (
    AgentState,
    RestartPhase,
    RestartRecord,
    target_state_from,
)

UTC = timezone.utc
PATH = "/etc/kube-loopback-guard/config.toml"
HARDENING = "issue 9 item {} (hardening): {}"
NET = "found by fuzzing (net owns the Kubernetes API client): {}"


# -- fixed here ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '[restart.lease]\nname = "\\n"',  # the value
        '"a\\nb" = 1',  # an unknown key
        '[[targets]]\nname = "k"\nhost = "a\\u2028b"',  # a Unicode line separator
    ],
)
def test_config_problems_stay_on_one_line(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, PATH)
    for problem in caught.value.problems:
        assert "\n" not in problem and "\u2028" not in problem, problem
        assert problem.startswith(PATH + ": ")
    assert any("\\n" in p or "\\u2028" in p for p in caught.value.problems)


# -- issue 9 item 1: state the decoder cannot read back -----------------------------


def _state_learned_from(not_before: datetime, not_after: datetime) -> AgentState:
    """The state the daemon builds after probing such a certificate served by
    the process that started an hour after its not_before."""
    started = not_before + timedelta(hours=1)
    cert = LoopbackCert("CN=x", "CN=x", "1", "ab", not_before, not_after, None)
    facts = TargetFacts("kube-apiserver", apiserver_process(started), None, probe_result(cert))
    thresholds = Thresholds(warning=timedelta(days=60), critical=timedelta(days=14))
    now = started + timedelta(days=1)
    report = TargetReport(
        target_config(), facts, assess(facts, thresholds, timedelta(days=365), now)
    )
    return AgentState({"kube-apiserver": target_state_from(report, None, checked_at=now)}, ())


def test_state_learned_from_a_certificate_ending_as_it_starts_reads_back() -> None:
    moment = datetime(1950, 1, 1, tzinfo=UTC)
    state = _state_learned_from(moment, moment)
    assert decode_state(encode_state(state)) == state


def test_state_learned_from_a_certificate_valid_until_9999_reads_back() -> None:
    state = _state_learned_from(
        datetime(2026, 1, 9, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)
    )
    assert decode_state(encode_state(state)) == state


def test_state_with_a_time_before_year_1000_reads_back() -> None:
    at = datetime(999, 1, 1, tzinfo=UTC)
    record = RestartRecord("kube-apiserver", at, RestartPhase.INTENT, None, None, None, "due")
    state = AgentState({}, (record,))
    assert decode_state(encode_state(state)) == state


_KEY = ec.generate_private_key(ec.SECP256R1())


# -- issue 9 item 4: line breaks from the peer ----------------------------------------


def test_a_served_subject_with_line_breaks_stays_one_status_line() -> None:
    der = certificate(
        CertSpec(
            key=_KEY,
            subject=[(CN, (0x0C, b"x\nWATCHDOG=trigger\n"))],
            not_before=time_field(2026, 1, 9, "utc"),
            not_after=time_field(2027, 1, 9, "utc"),
        )
    )
    peer = ServingPeer()
    try:
        peer.serve(pem(der), key_pem(_KEY))
        result = probe_module.probe("127.0.0.1", peer.port, LOOPBACK_SERVER_NAME, 5.0)
    finally:
        peer.close()
    assert result.cert is None
    _one_line_each(result)


# -- issue 9 item 5: X.509 versions -------------------------------------------------


def _versioned(version: int) -> bytes:
    return certificate(
        CertSpec(
            key=_KEY,
            version=version,
            subject=[(CN, (0x0C, b"apiserver-loopback-client@1767952693"))],
            not_before=time_field(2026, 1, 9, "utc"),
            not_after=time_field(2027, 1, 9, "utc"),
        )
    )


# Both cryptography 3.3 (Debian 11) and today's check the version as they load.
@pytest.mark.parametrize("version", [1, 3, 5], ids=["v2", "v4", "v6"])
def test_a_certificate_of_another_version_is_read_or_a_value_error(version: int) -> None:
    with contextlib.suppress(ValueError):
        read_loopback_cert(_versioned(version))


# -- issue 9 item 7: durations without bounds, names with a newline --------------------


def test_an_interval_select_cannot_wait_is_refused() -> None:
    try:
        config = parse_config('interval = "106752d"', PATH)
    except ConfigError:
        return
    read, write = os.pipe()
    try:
        os.write(write, b"x")
        select.select([read], [], [], config.interval.total_seconds())
    finally:
        os.close(read)
        os.close(write)


def test_a_lifetime_beyond_the_calendar_is_refused() -> None:
    with pytest.raises(ConfigError):
        parse_config('[[targets]]\nname = "k"\nlifetime = "999999999d"', PATH)


def test_a_target_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ConfigError):
        parse_config('[[targets]]\nname = "kube\\n"', PATH)


# -- issue 9 item 8: kubeconfig failures outside KubeconfigError -------------------


@pytest.mark.parametrize("flow", [True, False], ids=["json", "yaml"])
def test_a_deeply_nested_kubeconfig_is_a_kubeconfig_error(flow: bool, tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(_nested(3000, flow))
    with pytest.raises(KubeconfigError):
        load_kubeconfig(str(path))


def test_a_non_ascii_server_name_is_an_error_with_a_message(tmp_path: Path) -> None:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "k",
                "cluster": {
                    "server": "https://bücher.example:6443",
                    "insecure-skip-tls-verify": True,
                },
            }
        ],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "current-context": "c",
        "users": [{"name": "u", "user": {"token": "abc"}}],
    }
    path = tmp_path / "config"
    path.write_text(json.dumps(document))
    try:
        credentials = load_kubeconfig(str(path))
        # The fence keeps the name off the network once it is encoded.
        with mock.patch("socket.getaddrinfo", _loopback_only):
            KubeApiClient(credentials, timeout=0.5).request("GET", "/api")
    except (KubeconfigError, KubeApiError):
        return


# -- issue 9 item 9: an endless chunked body ----------------------------------------


def test_an_endless_chunk_is_read_only_up_to_the_body_limit() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFF\r\n"
    peer = ScriptedPeer(head, [], endless=b"x")
    with pytest.raises(NetError):
        http.exchange(
            peer,  # type: ignore[arg-type]
            "GET",
            "/livez?verbose",
            host="apiserver-loopback-client",
            accept="text/plain",
            limit=http.HEALTH_LIMIT,
        )
    assert peer.given < 1024 * 1024


# -- issue 9 item 14: times at the ends of the calendar --------------------------------


@pytest.mark.parametrize("text", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_a_time_beyond_the_calendar_in_utc_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_utc_time(text)


# -- issue 9 item 14, what is left: plan --at near the ends of the calendar -----------


@pytest.mark.parametrize("at", ["0001-01-02T00:00:00Z", "9999-12-31T00:00:00Z"])
def test_plan_at_the_ends_of_the_calendar_is_a_clean_answer(
    at: str, standin: StandinFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = standin()
    config = tmp_path / "config.toml"
    config.write_text(
        f'state_dir = "{tmp_path}/state"\n'
        f'[[targets]]\nname = "k"\nprocess_name = ""\nhost = "127.0.0.1"\nport = {server.port}\n'
        '[restart]\nenabled = true\nwhen_expired = "window"\n'
        '[[restart.windows]]\ndays = ["mon"]\nstart = "00:00"\nend = "24:00"\n'
    )
    code = main(["plan", "--config", str(config), "--at", at])
    assert code in (0, 2, 3), capsys.readouterr()


# -- found by fuzzing: the Kubernetes API client's answers, from a real peer ---------


def _api_answer(response: bytes) -> Tuple[int, Dict[str, Any]]:
    """The API client's answer to GET /x from a TLS peer on 127.0.0.1 that
    sends `response`."""
    with TlsScriptedPeer(response) as peer:
        credentials = ApiCredentials(
            kubeconfig="k",
            context="c",
            server=f"https://127.0.0.1:{peer.port}",
            insecure=True,
            token="t",
        )
        return KubeApiClient(credentials, timeout=5.0).request("GET", "/x")


def test_a_deeply_nested_api_body_is_read_or_refused() -> None:
    body = b"[" * 100_000
    with contextlib.suppress(KubeApiError):
        _api_answer(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def test_a_content_length_beyond_any_size_is_a_kube_api_error() -> None:
    with pytest.raises(KubeApiError):
        _api_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n{}")


# -- found by fuzzing: window membership at the ends of the calendar --------------


@pytest.mark.parametrize(
    ("zone", "instant"),
    [
        (
            "Africa/Abidjan",
            datetime(1, 1, 2, 0, 0, tzinfo=timezone.utc),
        ),  # the day before is year 0
        ("America/New_York", datetime(1, 1, 1, 0, 0, tzinfo=timezone.utc)),  # its reading is year 0
        (
            "Asia/Tokyo",
            datetime(9999, 12, 31, 23, 0, tzinfo=timezone.utc),
        ),  # its reading is year 10000
    ],
)
def test_window_membership_at_the_ends_of_the_calendar_is_an_answer(
    zone: str, instant: datetime
) -> None:
    from agent.judge.window import contains, next_opening, parse_window

    window = parse_window(["mon", "sun"], "00:00", "00:01", zone)
    assert contains(window, instant) in (True, False)
    opening = next_opening(window, instant)
    assert opening is None or opening[0] < opening[1]
