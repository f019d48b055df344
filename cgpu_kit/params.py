"""Job parameters declared once, used by validation, the CLI, the widgets and the templates.

A job type lists its :class:`Param` objects; everything that shows or checks a parameter reads that list,
so a bound written here is the bound the CLI, the panel and the runtime enforce.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .exceptions import ParameterError


@dataclass(frozen=True)
class Param:
    """One parameter of a job type: its default, its bounds or choices, and a line of help."""

    name: str
    default: Any
    help: str
    type: type = field(default=type(None))
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    nullable: bool = False

    def __post_init__(self) -> None:
        if self.type is type(None):
            object.__setattr__(self, "type", type(self.default))

    def describe_bounds(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.min is not None and self.max is not None:
            return f"between {self.min} and {self.max}"
        if self.min is not None:
            return f"at least {self.min}"
        if self.max is not None:
            return f"at most {self.max}"
        return f"a {self.type.__name__}"

    def coerce(self, value: Any) -> Any:
        """Return ``value`` as this parameter's type, or raise :class:`ParameterError` naming the bounds."""
        if value is None:
            if self.nullable:
                return None
            raise ParameterError(f"parameter {self.name!r} must be {self.describe_bounds()}, not None", name=self.name)
        try:
            value = _convert(value, self.type)
        except (TypeError, ValueError):
            raise ParameterError(
                f"parameter {self.name!r} must be {self.describe_bounds()}, got {value!r}", name=self.name
            ) from None
        if self.choices is not None and value not in self.choices:
            raise ParameterError(
                f"parameter {self.name!r} must be {self.describe_bounds()}, got {value!r}", name=self.name
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ParameterError(
                f"parameter {self.name!r} must be a finite number ({self.describe_bounds()}), got {value!r}", name=self.name
            )
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
                raise ParameterError(
                    f"parameter {self.name!r} must be {self.describe_bounds()}, got {value!r}", name=self.name
                )
        return value


def _convert(value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
            return True
        if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(value)
    if kind is int:
        if isinstance(value, bool):
            raise TypeError(value)
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(value)
    if kind is float:
        if isinstance(value, bool):
            raise TypeError(value)
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise TypeError(value)
        return value
    if kind in (list, tuple):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return list(value)
    return value


def check_number(name: str, value: Any, *, integer: bool = False, minimum: float = 0.0, above: bool = True,
                 allow_none: bool = True) -> Any:
    """A batch option (timeout, workers, part size...) as a finite number within its bound, or a
    :class:`ParameterError` naming it: nan, inf and out-of-range values are refused, never replaced by a default."""
    if value is None and allow_none:
        return None
    bound = f"{'greater than' if above else 'at least'} {minimum:g}"
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            if isinstance(value, bool) or not isinstance(value, str):
                raise ValueError(value)
            value = float(value)
        except ValueError:
            raise ParameterError(f"{name} must be {kind} {bound}, got {value!r}", name=name) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite number {bound}, got {value!r}", name=name)
    if integer:
        if isinstance(value, float) and not value.is_integer():
            raise ParameterError(f"{name} must be a whole number {bound}, got {value!r}", name=name)
        value = int(value)
    if value < minimum or (above and value == minimum):
        raise ParameterError(f"{name} must be {kind} {bound}, got {value!r}", name=name)
    return value


class ParamSet:
    """The ordered parameters of one job type."""

    def __init__(self, params: Sequence[Param]) -> None:
        self._params = {p.name: p for p in params}

    def __iter__(self):
        return iter(self._params.values())

    def __contains__(self, name: object) -> bool:
        return name in self._params

    def __getitem__(self, name: str) -> Param:
        return self._params[name]

    def names(self) -> list[str]:
        return list(self._params)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self}

    def resolve(self, given: Mapping[str, Any] | None = None, *, job_type: str = "job") -> dict[str, Any]:
        """Defaults overlaid with ``given``, each checked; unknown names are refused with the known ones."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self._params))
        if unknown:
            raise ParameterError(
                f"unknown {job_type} parameter(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(self._params)}",
                name=unknown[0],
            )
        out = {}
        for p in self:
            out[p.name] = p.coerce(given[p.name]) if p.name in given else p.default
        return out

