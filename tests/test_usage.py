"""agent.usage in-process; the CLI's exits are driven end to end in test_cli.py."""

from __future__ import annotations

import pytest

from agent.usage import join_negative_values


@pytest.mark.parametrize(
    ("argv", "joined"),
    [
        (["demo", "--expires-in", "-3d"], ["demo", "--expires-in=-3d"]),
        (["demo", "--lifetime", "-1d", "--json"], ["demo", "--lifetime=-1d", "--json"]),
        (["demo", "--expires-in", "30d"], ["demo", "--expires-in", "30d"]),
        # Not a value: an option after it stays an option (argparse then complains).
        (["demo", "--expires-in", "--json"], ["demo", "--expires-in", "--json"]),
        (["demo", "--expires-in"], ["demo", "--expires-in"]),
        (["check", "--target", "-3d"], ["check", "--target", "-3d"]),
    ],
)
def test_join_negative_values(argv: list, joined: list) -> None:
    assert join_negative_values(argv) == joined
