"""Frozen records for what a cold `check` builds, without `dataclasses`.

`from agent.record import dataclass, replace` stands for the same names from
`dataclasses`, for frozen classes only: importing `dataclasses` pulls in
`inspect`, `ast` and `dis`, and generating its methods costs a few
milliseconds more: a fifth of a cold `kube-loopback-guard check` over the
bare imports of psutil, ssl and x509.

A record is what `@dataclass(frozen=True)` makes of the same class, as far as
this project uses it: `__init__` from the annotated fields in order (with
their class defaults), `__repr__`, `__eq__` and `__hash__` over the fields,
`FrozenInstanceError` on assignment. Fields are plain annotations with plain
defaults (no `field()`, no ClassVar, no inheritance: a record refuses them).
`dataclasses.replace`, `fields`, `asdict` and `is_dataclass` still work on a
record: its `__dataclass_fields__` are built by `dataclasses` itself, when
first asked for.

mypy checks the records as the dataclasses they stand for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Tuple, Type, TypeVar

_T = TypeVar("_T")

# The attribute naming a record's fields, in order.
_FIELDS = "__record_fields__"


def _frozen_setattr(self: object, name: str, value: object) -> None:
    from dataclasses import FrozenInstanceError

    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: object, name: str) -> None:
    from dataclasses import FrozenInstanceError

    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _values(self: object) -> Tuple[object, ...]:
    return tuple(getattr(self, name) for name in getattr(type(self), _FIELDS))


def _repr(self: object) -> str:
    names: Tuple[str, ...] = getattr(type(self), _FIELDS)
    inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
    return f"{type(self).__qualname__}({inner})"


def _eq(self: object, other: object) -> Any:
    if other.__class__ is self.__class__:
        return _values(self) == _values(other)
    return NotImplemented


def _hash(self: object) -> int:
    return hash(_values(self))


class _DataclassFields:
    """`__dataclass_fields__` on first use: `dataclasses` builds them from
    the same annotations and defaults, then they replace this descriptor."""

    def __get__(self, instance: object, owner: type) -> Dict[str, Any]:
        import dataclasses

        names: Tuple[str, ...] = getattr(owner, _FIELDS)
        body: Dict[str, Any] = {
            "__module__": owner.__module__,
            "__qualname__": owner.__qualname__,
            "__annotations__": {name: owner.__annotations__[name] for name in names},
        }
        body.update((name, owner.__dict__[name]) for name in names if name in owner.__dict__)
        shadow: type = dataclasses.dataclass(frozen=True)(type(owner.__name__, (), body))
        fields: Dict[str, Any] = vars(shadow)["__dataclass_fields__"]
        type.__setattr__(owner, "__dataclass_fields__", fields)
        return fields


def _make_init(cls: type, names: Tuple[str, ...]) -> Callable[..., None]:
    defaults = {name: cls.__dict__[name] for name in names if name in cls.__dict__}
    params = []
    after_default = False
    for name in names:
        if name in defaults:
            params.append(f"{name}=_defaults[{name!r}]")
            after_default = True
        elif after_default:
            raise TypeError(f"{cls.__qualname__}: non-default field {name!r} after a default")
        else:
            params.append(name)
    lines = [f"  _set(self, {name!r}, {name})" for name in names] or ["  pass"]
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(lines) + "\n"
    scope: Dict[str, Any] = {"_defaults": defaults, "_set": object.__setattr__}
    exec(source, scope)
    init: Callable[..., None] = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _record(cls: Type[_T]) -> Type[_T]:
    if any(
        hasattr(base, _FIELDS) or hasattr(base, "__dataclass_fields__") for base in cls.__mro__[1:]
    ):
        raise TypeError(f"{cls.__qualname__}: a record does not inherit fields")
    names = tuple(cls.__dict__.get("__annotations__", {}))  # noqa: RUF063 - own, in order
    for name in names:
        annotation = str(cls.__annotations__[name])
        if "ClassVar" in annotation or "InitVar" in annotation:
            raise TypeError(f"{cls.__qualname__}.{name}: a record has plain fields only")
        if type(cls.__dict__.get(name)).__name__ == "Field":
            raise TypeError(f"{cls.__qualname__}.{name}: a record has plain defaults only")
    methods: Dict[str, object] = {
        _FIELDS: names,
        "__init__": _make_init(cls, names),
        "__repr__": _repr,
        "__eq__": _eq,
        "__hash__": _hash,
        "__setattr__": _frozen_setattr,
        "__delattr__": _frozen_delattr,
        "__match_args__": names,
        "__dataclass_fields__": _DataclassFields(),
    }
    for name, value in methods.items():
        setattr(cls, name, value)
    return cls


def _dataclass(*, frozen: bool) -> Callable[[Type[_T]], Type[_T]]:
    if not frozen:
        raise TypeError("agent.record makes frozen records only")
    return _record


def _replace(obj: _T, **changes: Any) -> _T:
    names = type(obj).__dict__.get(_FIELDS)
    if names is None:  # a real dataclass
        import dataclasses

        return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
    unknown = set(changes) - set(names)
    if unknown:
        raise TypeError(f"{type(obj).__qualname__} has no field {sorted(unknown)[0]!r}")
    values = {name: changes.get(name, getattr(obj, name)) for name in names}
    return type(obj)(**values)


if TYPE_CHECKING:
    from dataclasses import dataclass as dataclass
    from dataclasses import replace as replace
else:
    dataclass = _dataclass
    replace = _replace
