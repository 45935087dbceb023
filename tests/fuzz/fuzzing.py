"""What every fuzz harness shares: how many inputs it tries, and the defects
already known (issue 9) that it finds but does not fail on until they are fixed.

Budget (`KLG_FUZZ`): `quick` (the default, inside the normal suite: a few
dozen inputs per harness, a few seconds in all), `ci` (`.ci/run`'s fuzz step:
each harness's CI count, a few thousand), `long` (50 times that, for a run at
your desk). `KLG_FUZZ_INPUTS=N` sets every harness to N inputs.

Known defects: each entry says which issue item it is and recognises the
failure (an exception, or a property that does not hold) by its shape. A
harness that meets one records a hypothesis `event` (shown by
`--hypothesis-show-statistics`, so CI's log proves the harness still finds
it) and lets that input pass. `KLG_FUZZ_STRICT=1` fails on known defects too.
When a fix lands, delete its entry here and the `xfail` of its regression
test in test_regressions.py: from then on the harness fails on it.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Callable, Dict, Iterator, Optional, Tuple, Type

from hypothesis import HealthCheck, Phase, event, settings

PROFILE = os.environ.get("KLG_FUZZ", "quick")
STRICT = os.environ.get("KLG_FUZZ_STRICT", "") not in ("", "0")

_SCALE: Dict[str, Callable[[int], int]] = {
    "quick": lambda ci: max(10, ci // 100),
    "ci": lambda ci: ci,
    "long": lambda ci: ci * 50,
}


def inputs(ci: int, quick: Optional[int] = None) -> settings:
    """Given the number of inputs a harness tries in CI (and, for a slow
    harness, in the normal suite), return its hypothesis settings for the
    selected profile."""
    if PROFILE not in _SCALE:
        raise ValueError(f"KLG_FUZZ={PROFILE!r}: use quick, ci or long")
    override = os.environ.get("KLG_FUZZ_INPUTS")
    count = int(override) if override else _SCALE[PROFILE](ci)
    if PROFILE == "quick" and quick is not None and not override:
        count = quick
    return settings(
        max_examples=count,
        deadline=None,
        print_blob=True,
        # The explain phase reruns a failure many times to say which lines
        # matter; with a real peer that takes longer than it helps.
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )


class PropertyBroken(AssertionError):
    """A harness's property does not hold; `defect` is its known-defect key, if any."""

    def __init__(self, message: str, defect: Optional[str] = None) -> None:
        super().__init__(message)
        self.defect = defect


# key → (issue item, exception types, pattern of "Type: message").
# A harness names the keys that may apply to it; a failure that is not an
# exception of the code under test is raised as PropertyBroken(defect=key).
KNOWN: Dict[str, Tuple[str, Tuple[Type[BaseException], ...], Optional[str]]] = {
    # None open: every defect found so far is fixed (tests/fuzz/test_regressions.py).
}


def _known(error: BaseException, keys: Tuple[str, ...]) -> Optional[str]:
    if isinstance(error, PropertyBroken):
        return error.defect if error.defect in keys else None
    for key in keys:
        _, types, pattern = KNOWN.get(key, ("", (), None))
        if types and isinstance(error, types):
            return key
        if pattern and re.search(pattern, type(error).__name__ + ": " + str(error)):
            return key
    return None


@contextlib.contextmanager
def known_defects(*keys: str) -> Iterator[None]:
    """Given the known-defect keys that may apply here, let a failure that is
    one of them pass (recorded as an event); raise anything else."""
    try:
        yield
    except BaseException as error:
        key = _known(error, keys)
        if key is None or STRICT or key not in KNOWN:
            raise
        kind = "" if isinstance(error, PropertyBroken) else f" ({type(error).__name__})"
        event(f"known defect, {KNOWN[key][0]}{kind}")
