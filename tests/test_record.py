"""agent.record: a frozen record behaves as @dataclass(frozen=True) would,
side by side with a real dataclass of the same fields."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import subprocess
import sys
from typing import ClassVar, Optional, Tuple

import pytest

from agent import record


@record.dataclass(frozen=True)
class Light:
    """A record."""

    name: str
    port: int = 443
    hosts: Tuple[str, ...] = ()
    note: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Real:
    """The same fields as a real dataclass."""

    name: str
    port: int = 443
    hosts: Tuple[str, ...] = ()
    note: Optional[str] = None


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [(("a",), {}), (("a", 1), {"note": "x"}), ((), {"name": "a", "hosts": ("h",)})],
)
def test_a_record_is_built_compared_and_shown_like_a_frozen_dataclass(
    args: Tuple[object, ...], kwargs: dict[str, object]
) -> None:
    light, real = Light(*args, **kwargs), Real(*args, **kwargs)  # type: ignore[arg-type]
    assert repr(light).replace("Light", "Real") == repr(real)
    assert light == Light(*args, **kwargs)  # type: ignore[arg-type]
    assert hash(light) == hash(Light(*args, **kwargs))  # type: ignore[arg-type]
    assert light != real and light != record.replace(light, port=999)
    assert pickle.loads(pickle.dumps(light)) == light == copy.deepcopy(light)


def test_wrong_arguments_are_type_errors_as_for_a_dataclass() -> None:
    for build in (Light, Real):
        with pytest.raises(TypeError):
            build()  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            build("a", bogus=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        record.replace(Light("a"), bogus=1)


def test_a_record_is_frozen() -> None:
    light = Light("a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        light.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del light.port  # type: ignore[misc]


def test_dataclasses_functions_work_on_a_record() -> None:
    light = Light("a", hosts=("h",))
    assert dataclasses.is_dataclass(light)
    assert [f.name for f in dataclasses.fields(light)] == ["name", "port", "hosts", "note"]
    assert dataclasses.asdict(light) == dataclasses.asdict(Real("a", hosts=("h",)))
    assert dataclasses.replace(light, port=1) == Light("a", 1, ("h",))
    # and the record's own replace on a real dataclass
    assert record.replace(Real("a"), port=2) == Real("a", 2)


def test_what_a_record_does_not_support_is_refused() -> None:
    with pytest.raises(TypeError):

        @record.dataclass(frozen=True)
        class Counter:
            count: ClassVar[int] = 0

    with pytest.raises(TypeError):

        @record.dataclass(frozen=True)
        class Child(Light):
            extra: int = 0

    with pytest.raises(TypeError):

        @record.dataclass(frozen=True)
        class Order:
            first: int = 0
            second: int  # type: ignore[misc]

    with pytest.raises(TypeError):
        record.dataclass(frozen=False)  # type: ignore[call-overload]


def test_a_cold_check_imports_no_dataclasses() -> None:
    code = (
        "import sys, agent.check, agent.config.loader, agent.observe.probe;"
        "print('dataclasses' in sys.modules)"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "False"
