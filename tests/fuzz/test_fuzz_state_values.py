"""Fuzz: the state codec over the whole value space, records built field by
field (not by the agent's builders, test_fuzz_state.py): whatever the agent
could hold reads back exactly (a state it could not read back used to wipe
the restart history, issue 9.1), and a document with any value anywhere is a
state or a ValueError whose restart records are salvaged.

These ran with a few hundred inputs each inside the normal suite
(tests/state/test_codec.py); here they run with the fuzz budget: that count
in CI's fuzz step, a few dozen in the normal suite.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Optional

from builders import apiserver_process, probe_result, target_config
from fuzzing import inputs
from hypothesis import given
from hypothesis import strategies as st

from agent.config.types import Thresholds
from agent.judge.assess import assess
from agent.model import (
    EARLIEST_CERT_TIME,
    MAX_LIFETIME,
    LoopbackCert,
    State,
    TargetFacts,
    TargetReport,
)
from agent.state.codec import decode_state, encode_state, salvage_restarts
from agent.state.records import (
    AgentState,
    CertRecord,
    ProcessRecord,
    RestartPhase,
    RestartRecord,
    RestartResult,
    TargetState,
    target_state_from,
)

UTC = timezone.utc
THRESHOLDS = Thresholds(warning=timedelta(days=60), critical=timedelta(days=14))

# Every UTC instant datetime can hold, years 1 to 9999 included: the state
# file writes what the clock, psutil and a peer's certificate give.
any_utc = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)
).map(lambda d: d.replace(tzinfo=UTC))
text = st.text(max_size=40)
processes = st.builds(ProcessRecord, pid=st.integers(1, 2**22), started_at=any_utc)
certs = st.builds(CertRecord, sha256=text, subject=text, not_before=any_utc, not_after=any_utc)
lifetimes = st.timedeltas(min_value=timedelta(microseconds=1), max_value=MAX_LIFETIME)
states = st.sampled_from([s.value for s in State])
finite = st.floats(allow_nan=False, allow_infinity=False)

targets = st.builds(
    TargetState,
    checked_at=any_utc,
    state=states,
    source=st.sampled_from(["probe", "process-start", "none"]),
    summary=text,
    seconds_left=st.none() | finite,
    not_after=st.none() | any_utc,
    cert=st.none() | certs,
    process=st.none() | processes,
    probe_error=st.none() | text,
    learned_lifetime=st.none() | lifetimes,
    learned_from=st.none() | processes,
    last_alert_state=st.none() | states,
    last_alert_at=st.none() | any_utc,
)
restarts = st.builds(
    RestartRecord,
    target=text,
    at=any_utc,
    phase=st.sampled_from(list(RestartPhase)),
    outcome=st.none() | st.sampled_from(list(RestartResult)),
    old_not_after=st.none() | any_utc,
    new_not_after=st.none() | any_utc,
    detail=text,
)
agent_states = st.builds(
    AgentState,
    targets=st.dictionaries(text, targets, max_size=3),
    restarts=st.lists(restarts, max_size=8).map(tuple),
)


@inputs(400, quick=40)
@given(agent_states)
def test_every_state_reads_back_exactly(state: AgentState) -> None:
    assert decode_state(encode_state(state)) == state


# Certificates as read_loopback_cert lets them through: dated 1950 to 9999,
# not_after not before not_before.
cert_times = st.datetimes(
    min_value=EARLIEST_CERT_TIME.replace(tzinfo=None),
    max_value=datetime(9999, 12, 31, 23, 59, 59),
).map(lambda d: d.replace(tzinfo=UTC, microsecond=0))


@inputs(300, quick=30)
@given(not_before=cert_times, not_after=cert_times, previous_lifetime=st.none() | lifetimes)
def test_states_built_from_odd_certificates_read_back(
    not_before: datetime, not_after: datetime, previous_lifetime: Optional[timedelta]
) -> None:
    # The certificate matches its process (not_before = start − 1 h), so the
    # agent would learn its lifetime: ≤ 0 or ≥ 1e10 s used to be written and
    # then refused on reading.
    if not_after < not_before:
        not_before, not_after = not_after, not_before
    started = min(not_before + timedelta(hours=1), datetime(9999, 12, 31, tzinfo=UTC))
    process = apiserver_process(started)
    cert = LoopbackCert(
        subject="CN=apiserver-loopback-client@1",
        issuer="CN=apiserver-loopback-client-ca@1",
        serial="1",
        sha256="ab" * 32,
        not_before=not_before,
        not_after=not_after,
        generated_at=None,
    )
    facts = TargetFacts("t", process, None, probe_result(cert))
    now = datetime(2026, 11, 29, tzinfo=UTC)
    report = TargetReport(target_config("t"), facts, assess(facts, THRESHOLDS, MAX_LIFETIME, now))
    previous = None
    if previous_lifetime is not None:
        previous = target_state_from(report, None, checked_at=now)
    built = target_state_from(report, previous, checked_at=now)
    state = AgentState(targets={"t": built}, restarts=())
    assert decode_state(encode_state(state)) == state
    if built.learned_lifetime is not None:
        assert timedelta(0) < built.learned_lifetime <= MAX_LIFETIME


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=30,
)


@inputs(300, quick=30)
@given(json_values, st.sampled_from(["targets", "restarts", "version", None]))
def test_any_document_decodes_or_raises_value_error(value: object, key: Optional[str]) -> None:
    # Whatever sits where: a state or a ValueError (the file is moved aside),
    # and whatever decodes, encodes and decodes to itself.
    document = {"version": 1, "targets": {}, "restarts": []}
    if key is not None:
        document[key] = value
    data = json.dumps(document if key is not None else value).encode()
    try:
        state = decode_state(data)
    except ValueError:
        assert salvage_restarts(data) is not None
        return
    assert decode_state(encode_state(state)) == state


@inputs(300, quick=30)
@given(agent_states, st.data())
def test_a_state_with_one_value_replaced_decodes_or_raises_value_error(
    state: AgentState, data: st.DataObject
) -> None:
    document = json.loads(encode_state(state))
    count = len(document["restarts"])
    objects = [document, *document["targets"].values(), *document["restarts"]]
    target = data.draw(st.sampled_from(objects))
    key = data.draw(st.sampled_from(sorted(target)))
    target[key] = data.draw(json_values)
    mutated = json.dumps(document).encode()
    try:
        decoded = decode_state(mutated)
    except ValueError:
        # The records that still read are kept (fewer, never a crash).
        assert len(salvage_restarts(mutated)) <= count
        return
    assert decode_state(encode_state(decoded)) == decoded
