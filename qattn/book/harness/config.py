"""One convention for every experiment's configuration.

An experiment's configuration is a FROZEN dataclass deriving from :class:`ExperimentConfig`:

- its profiles are data: ``PROFILES``, a class-level ``{profile: {field: value}}`` of overrides
  of the field defaults (``{}``: the defaults);
- a field whose values come from a fixed set declares them with :func:`choice` (a tuple field:
  every element must be allowed); a dict field whose keys are the fields of another dataclass
  declares it with :func:`nested`;
- :meth:`ExperimentConfig.for_profile` builds it from a profile, a seed and overrides,
  :meth:`ExperimentConfig.from_dict` from a JSON dict (lists back to tuples) and
  :meth:`ExperimentConfig.to_dict` gives the JSON-ready dict that
  :func:`qattn.book.provenance.run_cached` stores; :meth:`ExperimentConfig.coerce` accepts either;
- an unknown profile, an unknown key or a value outside its allowed set is refused with a
  ``ValueError`` that names what was wrong and what is allowed.

Where the seed goes is the class's :meth:`ExperimentConfig.seeded` (by default the ``seed`` field).

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Demo(ExperimentConfig):
...     PROFILES = {"full": {}, "ci": {"steps": 2}}
...     profile: str = "full"
...     seed: int = 0
...     steps: int = 10
...     variants: tuple[str, ...] = choice(("a", "b"), ("a", "b"))
>>> Demo.for_profile("ci", seed=3).to_dict()
{'profile': 'ci', 'seed': 3, 'steps': 2, 'variants': ['a', 'b']}
>>> Demo.from_dict({"profile": "ci", "variants": ["b"]}).variants
('b',)
>>> Demo.for_profile("ci", variants=("c",))
Traceback (most recent call last):
...
ValueError: Demo.variants: value(s) ['c'] not allowed; allowed: ['a', 'b']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar

__all__ = ["ExperimentConfig", "choice", "nested", "freeze", "thaw"]

C = TypeVar("C", bound="ExperimentConfig")

_ALLOWED = "allowed_values"
_NESTED = "nested_fields"


def choice(allowed: Iterable[Any], default: Any) -> Any:
    """A dataclass field whose value (or, for a tuple, each element) must be one of ``allowed``."""
    return dataclasses.field(default=freeze(default), metadata={_ALLOWED: tuple(allowed)})


def nested(of: type, exclude: Iterable[str] = ()) -> Any:
    """A dict field (default ``{}``) whose keys must be fields of the dataclass ``of`` (less ``exclude``)."""
    keys = tuple(f.name for f in dataclasses.fields(of) if f.name not in set(exclude))
    return dataclasses.field(default_factory=dict, metadata={_NESTED: (of.__name__, keys)})


def freeze(value: Any) -> Any:
    """Lists (at any depth, also inside dicts) → tuples: the immutable form a config holds."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, Mapping):
        return {k: freeze(v) for k, v in value.items()}
    return value


def thaw(value: Any) -> Any:
    """Tuples (at any depth) → lists: the JSON form."""
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    return value


def _names(values: Iterable[Any]) -> str:
    values = [repr(v) for v in values]
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]


class ExperimentConfig:
    """Base of the experiments' frozen config dataclasses (see the module docstring)."""

    #: profile name → overrides of the field defaults
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = freeze(getattr(self, f.name))
            object.__setattr__(self, f.name, value)  # lists given directly are stored as tuples
            if _ALLOWED in f.metadata:
                allowed = f.metadata[_ALLOWED]
                given = value if isinstance(value, tuple) else (value,)
                bad = [v for v in given if v not in allowed]
                if bad:
                    raise ValueError(f"{type(self).__name__}.{f.name}: value(s) {bad} not allowed; allowed: {list(allowed)}")
            if _NESTED in f.metadata:
                of, keys = f.metadata[_NESTED]
                unknown = sorted(set(value) - set(keys))
                if unknown:
                    raise ValueError(f"{type(self).__name__}.{f.name}: unknown key(s) {unknown} (fields of {of}); allowed: {list(keys)}")
        profiles = type(self).PROFILES
        if profiles and getattr(self, "profile", None) not in profiles:
            raise ValueError(f"{type(self).__name__}: profile must be {_names(sorted(profiles))}, got {getattr(self, 'profile', None)!r}")

    @classmethod
    def seeded(cls, values: dict[str, Any], seed: int) -> dict[str, Any]:
        """``values`` (the profile's overrides) with ``seed`` applied: by default the ``seed`` field."""
        return {**values, "seed": seed}

    @classmethod
    def for_profile(cls: type[C], profile: str, seed: int = 0, **overrides: Any) -> C:
        """The config of ``profile`` (its ``PROFILES`` entry over the defaults), ``seed``, then ``overrides``."""
        if profile not in cls.PROFILES:
            raise ValueError(f"{cls.__name__}: profile must be {_names(sorted(cls.PROFILES))}, got {profile!r}")
        return cls.from_dict({**cls.seeded({"profile": profile, **cls.PROFILES[profile]}, seed), **overrides})

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """The config from a (JSON) dict; lists become tuples; unknown keys are refused."""
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config field(s) {unknown}; allowed: {names}")
        return cls(**{k: freeze(v) for k, v in data.items()})

    @classmethod
    def coerce(cls: type[C], config: C | Mapping[str, Any]) -> C:
        """``config`` itself, or the config built from its dict (what ``run`` accepts)."""
        return config if isinstance(config, cls) else cls.from_dict(config)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict (tuples → lists) that ``run_cached`` stores; ``from_dict`` inverts it."""
        return {f.name: thaw(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` (validated like any other config)."""
        return type(self).from_dict({**self.to_dict(), **changes})
