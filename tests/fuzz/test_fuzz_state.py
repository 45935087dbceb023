"""Fuzz: the state file's codec, `decode_state(encode_state(x)) == x`.

For every state the agent can build, over the full value space: the target
records come from the agent's own builders (facts → assess →
target_state_from, alert bookkeeping as the daemon sets it) for any
certificate dates (year 1 to 9999, not_before after not_after), any process
start, any clock reading and any text; restart records are built as the
restarter builds them (intent, then done with any outcome and detail).
A second harness feeds arbitrary bytes and JSON to the decoder: a state or a
ValueError, nothing else.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional

from builders import target_config
from fuzzing import PropertyBroken, inputs
from hypothesis import event, given
from hypothesis import strategies as st

from agent.config.types import Thresholds
from agent.judge.assess import assess
from agent.model import (
    ApiserverProcess,
    LivezVerdict,
    LoopbackCert,
    ProbeResult,
    State,
    TargetFacts,
    TargetReport,
)
from agent.state.codec import decode_state, encode_state
from agent.state.records import (
    MAX_RESTARTS,
    AgentState,
    RestartPhase,
    RestartRecord,
    RestartResult,
    TargetState,
    add_restart,
    target_state_from,
)

UTC = timezone.utc
THRESHOLDS = Thresholds(warning=timedelta(days=60), critical=timedelta(days=14))

# Any instant, in any offset; whole seconds for certificates, microseconds
# for the clock and process starts.
_any_instant = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)
_this_era = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
# Mostly this era, so that one odd date does not hide what else an example holds.
_instants = st.one_of(_this_era, _this_era, _this_era, _this_era, _any_instant)
_cert_times = _instants.map(lambda moment: moment.replace(microsecond=0))
_text = st.text(max_size=30)


@st.composite
def certificates(draw: st.DrawFn) -> LoopbackCert:
    not_before = draw(_cert_times)
    # Mostly shaped like upstream's (a year or three after not_before), sometimes anything.
    lifetime = draw(st.sampled_from([timedelta(days=365), timedelta(days=1096), timedelta(0)]))
    try:
        shaped = not_before + lifetime
    except OverflowError:
        shaped = not_before
    not_after = draw(st.one_of(st.just(shaped), _cert_times))
    return LoopbackCert(
        subject=draw(_text),
        issuer=draw(_text),
        serial=draw(_text),
        sha256=draw(_text),
        not_before=not_before,
        not_after=not_after,
        generated_at=None,
    )


@st.composite
def target_reports(draw: st.DrawFn) -> TargetReport:
    cert = draw(st.none() | certificates())
    started = draw(_instants)
    if cert is not None and draw(st.booleans()):
        # The process that served it: the lifetime is learned from it.
        with contextlib.suppress(OverflowError):
            started = cert.not_before + timedelta(hours=1)
    process = draw(
        st.none()
        | st.just(
            ApiserverProcess(draw(st.integers(1, 2**22)), "kube-apiserver", started, 6443, None)
        )
    )
    livez: LivezVerdict = draw(st.sampled_from(["ok", "failed", "absent", "error", "not-checked"]))
    probe = ProbeResult(
        host="127.0.0.1",
        port=6443,
        server_name="apiserver-loopback-client",
        cert=cert,
        livez=livez,
        error=None if cert is not None else draw(_text),
    )
    facts = TargetFacts("kube-apiserver", process, draw(st.none() | _text), probe)
    now = draw(_instants)
    lifetime = draw(st.sampled_from([timedelta(days=365), timedelta(days=1096)]))
    return TargetReport(target_config(), facts, assess(facts, THRESHOLDS, lifetime, now))


@st.composite
def agent_states(draw: st.DrawFn) -> AgentState:
    targets: Dict[str, TargetState] = {}
    for name in draw(st.lists(_text, max_size=2, unique=True)):
        previous: Optional[TargetState] = None
        for _ in range(draw(st.integers(1, 2))):
            checked_at = draw(_instants)
            try:
                report = draw(target_reports())
            except OverflowError:
                # assess at the ends of time; its own harness, not this one's
                continue
            state = target_state_from(report, previous, checked_at=checked_at)
            alert = draw(st.none() | st.sampled_from([s.value for s in State]))
            previous = replace(
                state, last_alert_state=alert, last_alert_at=None if alert is None else checked_at
            )
        if previous is not None:
            targets[name] = previous
    state = AgentState(targets=targets, restarts=())
    for _ in range(draw(st.integers(0, 3))):
        intent = RestartRecord(
            target=draw(_text),
            at=draw(_instants),
            phase=RestartPhase.INTENT,
            outcome=None,
            old_not_after=draw(st.none() | _cert_times),
            new_not_after=None,
            detail=draw(st.sampled_from(["due", "expired"])),
        )
        state = add_restart(state, intent)
        if draw(st.booleans()):
            done = replace(
                intent,
                phase=RestartPhase.DONE,
                outcome=draw(st.sampled_from(list(RestartResult))),
                new_not_after=draw(st.none() | _cert_times),
                detail=draw(_text),
            )
            state = add_restart(state, done)
    return state


@inputs(2000)
@given(agent_states())
def test_every_state_reads_back_as_written(state: AgentState) -> None:
    assert len(state.restarts) <= MAX_RESTARTS
    data = encode_state(state)
    try:
        again = decode_state(data)
    except ValueError as error:
        raise PropertyBroken(f"encoded state unreadable: {error}") from None
    if again != state:
        raise PropertyBroken("state reads back different")
    event("read back equal")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=12,
)


def _sound_file() -> bytes:
    """A state file as the daemon writes it: one target probed, one restart done."""
    from builders import apiserver_process, loopback_cert, probe_result

    started = datetime(2026, 1, 9, 9, 58, 13, 123456, tzinfo=UTC)
    cert = loopback_cert(started, timedelta(days=365))
    facts = TargetFacts("kube-apiserver", apiserver_process(started), None, probe_result(cert))
    now = started + timedelta(days=300)
    report = TargetReport(
        target_config(), facts, assess(facts, THRESHOLDS, timedelta(days=365), now)
    )
    state = AgentState({"kube-apiserver": target_state_from(report, None, checked_at=now)}, ())
    intent = RestartRecord(
        "kube-apiserver", now, RestartPhase.INTENT, None, cert.not_after, None, "due"
    )
    state = add_restart(state, intent)
    state = add_restart(
        state,
        replace(intent, phase=RestartPhase.DONE, outcome=RestartResult.SUCCEEDED, detail="ok"),
    )
    return encode_state(state)


_SOUND = json.loads(_sound_file())


@st.composite
def damaged_files(draw: st.DrawFn) -> bytes:
    """A real state file with one value replaced by any JSON, or raw bytes."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=200))
    document: Dict[str, Any] = json.loads(json.dumps(_SOUND))
    path: List[Any] = []
    node: Any = document
    while isinstance(node, (dict, list)) and node and draw(st.integers(0, 4)):
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        path.append(key)
        node = node[key]
    if not path:
        return json.dumps(draw(_json)).encode()
    parent: Any = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = draw(_json)
    return json.dumps(document).encode()


@inputs(2000)
@given(damaged_files())
def test_any_file_is_a_state_or_a_value_error(data: bytes) -> None:
    try:
        decode_state(data)
    except ValueError:
        event("ValueError")
        return
    event("state")
