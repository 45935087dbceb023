"""Recurring problems of the agent itself, logged by kind through a real
Journal (lines on a stream): once when they appear or change, a daily
reminder while they last, once when they are gone."""

from __future__ import annotations

import errno
import io
from datetime import datetime, timedelta, timezone
from typing import List

from agent.report.journal import Journal
from agent.report.problems import Problems, describe, signature

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def lines(stream: io.StringIO) -> List[str]:
    return stream.getvalue().splitlines()


def messages(stream: io.StringIO) -> List[str]:
    """The MESSAGEs of the stderr lines `PRIO message PROBLEM=kind`."""
    return [line.split(" ", 1)[1].rsplit(" PROBLEM=", 1)[0] for line in lines(stream)]


def temp_error(name: str, number: int = errno.EISDIR) -> OSError:
    return OSError(number, "Is a directory", f"/var/lib/x/.klg.prom.{name}")


def test_the_same_kind_with_other_text_is_logged_once() -> None:
    stream, clock = io.StringIO(), Clock()
    problems = Problems(Journal(stream), clock)
    for name in ("a1b2c3", "d4e5f6", "g7h8i9"):
        clock.now += timedelta(minutes=5)
        error = temp_error(name)
        problems.report("metrics", error, f"cannot write metrics: {error}")
    assert len(lines(stream)) == 1
    assert "a1b2c3" in lines(stream)[0]


def test_a_daily_reminder_while_it_lasts() -> None:
    stream, clock = io.StringIO(), Clock()
    problems = Problems(Journal(stream), clock)
    for _ in range(24 * 12 + 1):  # a day and one interval at 5 min
        problems.report("metrics", temp_error("x"), "cannot write metrics")
        clock.now += timedelta(minutes=5)
    assert len(lines(stream)) == 2


def test_another_kind_of_failure_is_logged_at_once() -> None:
    stream, clock = io.StringIO(), Clock()
    problems = Problems(Journal(stream), clock)
    problems.report("metrics", temp_error("x"), "is a directory")
    problems.report("metrics", temp_error("y", errno.ENOSPC), "no space left")
    problems.report("state", temp_error("z"), "state: is a directory")
    assert messages(stream) == [
        "is a directory",
        "no space left",
        "state: is a directory",
    ]


def test_solved_is_said_once_and_a_return_is_logged_again() -> None:
    stream, clock = io.StringIO(), Clock()
    problems = Problems(Journal(stream), clock)
    problems.solved("check", "checks work again")  # nothing was wrong: silent
    assert lines(stream) == []
    problems.report("check", RuntimeError("boom 1"), "check failed: boom 1")
    problems.solved("check", "checks work again")
    problems.solved("check", "checks work again")
    problems.report("check", RuntimeError("boom 2"), "check failed: boom 2")
    assert messages(stream) == [
        "check failed: boom 1",
        "checks work again",
        "check failed: boom 2",
    ]


def test_a_backward_clock_step_does_not_silence_the_reminder() -> None:
    stream, clock = io.StringIO(), Clock()
    problems = Problems(Journal(stream), clock)
    problems.report("check", RuntimeError("x"), "check failed")
    clock.now -= timedelta(days=30)
    problems.report("check", RuntimeError("x"), "check failed")
    assert len(lines(stream)) == 2


def test_signature_and_description() -> None:
    assert signature(temp_error("a")) == signature(temp_error("b")) == "IsADirectoryError:21"
    assert signature(ValueError("x")) == "ValueError"
    said = describe(ValueError("line one\nSTATUS=evil\r\n\x1b[31m" + "x" * 1000))
    assert "\n" not in said and "\r" not in said and "\x1b" not in said
    assert said.startswith("ValueError: line one\\nSTATUS=evil")
    assert len(said) < 400  # bounded
