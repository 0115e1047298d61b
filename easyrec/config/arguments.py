"""A component's options checked against its constructor: the one place for its defaults and rules.

The signature says which options exist and which are required; the annotations say their types, and their value
rules are declared on the parameters with pydantic (``gamma: Annotated[float, Field(ge=0)] = 2.0``,
``mode: Literal["max", "min"]``). A rule that spans several options is a function given to :func:`checked`
(``across=``), or a dataclass's ``__post_init__``. The same check serves a config node (:mod:`easyrec.config.validate`,
keys named from the root: ``optimizer.lr=-1.0: must be > 0``) and plain Python (``@checked`` on ``__init__``:
``BinaryFocalLoss(gamma=-1)`` raises ``ValueError("gamma=-1.0: must be >= 0")``).

No torch here: the config of ``easyrec train`` is checked before torch is imported where it can be.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Interval, MinLen

#: The largest float32: every float option ends up in float32 tensors (parameters, data), where a larger value is inf.
FLOAT32_MAX = 3.4028234663852886e38


if typing.TYPE_CHECKING:
    from pydantic import TypeAdapter


class _Finite:
    """Marks a float option that may not be inf or NaN (pydantic's ``Field(allow_inf_nan=False)``, without importing
    pydantic where the shorthands below are only declared: ``easyrec train --cfg job`` imports the logger)."""


FINITE = _Finite()

#: Keys of a config node that Hydra reads, not the constructor.
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_convert_", "_recursive_", "_args_"})

# Shorthands for the rules most options share.
# A float option may not be inf or NaN: in a config, the check of every value says so first.
Positive = Annotated[float, Gt(0), FINITE]
NonNegative = Annotated[float, Ge(0), FINITE]
PositiveInt = Annotated[int, Gt(0)]
NonNegativeInt = Annotated[int, Ge(0)]
#: [0, 1): dropout, label smoothing
Fraction = Annotated[float, Interval(ge=0, lt=1)]
#: (0, 1): a probability that is neither certainty
Probability = Annotated[float, Interval(gt=0, lt=1)]
#: (0, 1]: the share of samples kept
Share = Annotated[float, Interval(gt=0, le=1)]
#: numpy's generators take no negative seed, nor one of more than 32 bits
Seed = Annotated[int, Interval(ge=0, le=2**32 - 1)]
Units = Annotated[list[PositiveInt], MinLen(1)]

_CONSTRAINT_ERRORS = frozenset(
    {
        "finite_number",
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "literal_error",
        "too_short",
        "too_long",
        "string_too_short",
        "string_too_long",
    }
)
_TYPE_NAMES = {float: "Float", int: "Integer", bool: "Boolean", str: "String"}


class OptionError(ValueError):
    """An option its constructor refuses: ``key`` relative to the node (``""``: the node), ``detail`` the rest of the
    line (``"=-1.0: must be > 0"`` or ``": a value is required"``)."""

    def __init__(self, key: str, detail: str) -> None:
        self.key, self.detail = key, detail
        super().__init__(f"{key}{detail}")

    def under(self, path: str) -> OptionError:
        """The same error, its key seen from ``path`` (``"loss"``, ``"data.features.dense.0"``)."""
        return OptionError(f"{path}.{self.key}" if self.key and path else self.key or path, self.detail)


def checked(init: Callable | None = None, *, across: Callable[..., str | None] | None = None) -> Any:
    """Decorate ``__init__`` (or a dataclass) so that plain-Python construction refuses what the config check
    refuses, in its words.

    ``across(**options)``: the rule of several options (all of them given, defaults filled in), returning what is
    wrong (its key first, relative to the component: ``"patience=3 and max_steps=...: set only one"``) or None.
    """

    def wrap(init: Callable) -> Callable:
        signature = inspect.signature(init)

        @functools.wraps(init)
        def checked_init(self: Any, *args: Any, **kwargs: Any) -> None:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            for name, adapter in _rules_of(init).items():
                if name in bound.arguments:
                    bound.arguments[name] = _check_value(name, bound.arguments[name], adapter, as_given=True)
            problem = across(**dict(list(bound.arguments.items())[1:])) if across is not None else None
            if problem:
                raise _across_error(problem)
            init(*bound.args, **bound.kwargs)

        checked_init.__checked_across__ = across  # type: ignore[attr-defined]
        return checked_init

    def wrap_any(init: Any) -> Any:
        if isinstance(init, type):  # a dataclass: its generated __init__
            init.__init__ = wrap(init.__init__)
            return init
        return wrap(init)

    return wrap_any(init) if init is not None else wrap_any


def check_options(
    target: Any, options: Mapping[str, Any], partial: bool, rules: Mapping[str, Any] | None = None
) -> None:
    """Check the options of one config node (plain containers, without Hydra's keys) against ``target``: unknown keys,
    missing required ones (unless ``partial``: those are given when the partial is called), wrong types, the values'
    rules and the rules across options. Nested nodes with a ``_target_`` are the caller's (they are checked as nodes
    of their own); dataclass-typed options (the feature spec) are checked field by field. ``rules``: annotations
    declared for a target that is not ours (by parameter name). Raises :class:`OptionError`.
    """
    _bind(target, options, partial, rules or {})


def defaults(target: Any) -> dict[str, Any]:
    """The default of each option of ``target`` that has one, as its signature declares it (with the options it
    passes on to its base class with ``**kwargs``)."""
    return {
        name: p.default for name, p in (_parameters(target) or {}).items() if p.default is not inspect.Parameter.empty
    }


def _bind(target: Any, options: Mapping[str, Any], partial: bool, rules: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` checked as the keyword arguments of ``target``; returns them, defaults filled in."""
    parameters = _parameters(target)
    if parameters is None:  # no signature to bind to (a builtin): left to the call
        return dict(options)
    named = {
        name: p
        for name, p in parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    open_ended = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for name in options:
        if name not in named and not open_ended:
            choices = ", ".join(n for n in named if not n.startswith("_"))
            raise OptionError(name, f": not an option of {_name(target)}; its options are: {choices}")
    if not partial:
        for name, p in named.items():
            if p.default is inspect.Parameter.empty and name not in options:
                raise OptionError(name, f": a value is required (e.g. {name}=...)")
    hints = {**_hints(target), **rules}
    values = {name: p.default for name, p in named.items() if p.default is not inspect.Parameter.empty}
    for name, value in options.items():
        values[name] = _check_option(name, value, hints.get(name))
    _check_across(target, values)
    return values


def _check_option(key: str, value: Any, annotation: Any) -> Any:
    """One option: a nested ``_target_`` node is left as it is; a dataclass node (or a list or dict of them) is bound
    field by field and built; anything else is checked against its annotation."""
    if isinstance(value, Mapping) and "_target_" in value:
        return value
    node_class = _dataclass_in(annotation)
    if node_class is not None and isinstance(value, Mapping):
        return _build(node_class, value, key)
    if isinstance(value, list):
        element = _element_dataclass(annotation, list)
        if element is not None:
            return [_build(element, v, f"{key}.{i}") if isinstance(v, Mapping) else v for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        element = _element_dataclass(annotation, dict)
        if element is not None:
            return {k: _build(element, v, f"{key}.{k}") if isinstance(v, Mapping) else v for k, v in value.items()}
    if _holds_node(value):  # a list or dict of nodes: Hydra builds each, and each is checked on its own
        return value
    adapter = _adapter(annotation)
    return value if adapter is None else _check_value(key, value, adapter)


def _holds_node(value: Any) -> bool:
    """Whether ``value`` is, or holds at any depth, a node with a ``_target_``."""
    if isinstance(value, Mapping):
        return "_target_" in value or any(_holds_node(v) for v in value.values())
    return isinstance(value, list) and any(_holds_node(v) for v in value)


def _build(node_class: type, value: Mapping[str, Any], key: str) -> Any:
    """A dataclass node (``data.features.dense.0``) bound to its fields, then built: its ``__post_init__`` checks what
    spans several fields."""
    try:
        fields = _bind(node_class, value, partial=False, rules={})
    except OptionError as error:
        raise error.under(key) from None
    try:
        return node_class(**fields)
    except ValueError as error:  # its message starts with a key relative to the node
        raise OptionError(key, f".{error}") from None


def _check_across(target: Any, values: dict[str, Any]) -> None:
    init = target.__init__ if isinstance(target, type) else target
    across = getattr(init, "__checked_across__", None)
    if across is not None:
        problem = across(**values)
        if problem:
            raise _across_error(problem)


def _across_error(problem: str) -> OptionError:
    key, _, rest = problem.partition(":")
    return OptionError(key, f":{rest}")


def _check_value(key: str, value: Any, adapter: tuple[TypeAdapter, Any], as_given: bool = False) -> Any:
    """``value`` validated (and converted: 1 -> 1.0 for a float) by ``adapter``, or an OptionError in our words,
    showing the value as the config holds it (converted), or ``as_given`` in Python."""
    from pydantic import ValidationError

    type_adapter, annotation = adapter
    if isinstance(value, float) and not math.isfinite(value) and _finite_only(annotation):
        problems: list[Any] = [{"type": "finite_number", "loc": ()}]
    else:
        try:
            return type_adapter.validate_python(value)
        except ValidationError as error:
            problems = error.errors(include_url=False)
    shown = str(value) if as_given else _shown(value, annotation)
    custom = [p for p in problems if p["type"] == "value_error"]
    if custom:
        return _raise(key, f"={shown}: {custom[0]['ctx']['error']}")
    constraint = next((p for p in problems if p["type"] in _CONSTRAINT_ERRORS), None)
    if constraint is not None:
        element = constraint["loc"] and isinstance(constraint["loc"][0], int)
        failed = constraint["type"]
        words = (
            f"every element {requirement(_element(annotation), failed)}" if element else requirement(annotation, failed)
        )
        return _raise(key, f"={shown}: {words}")
    kind = _TYPE_NAMES.get(_base(annotation))
    if kind is not None and not isinstance(value, list | dict):
        return _raise(key, f": Value {value!r} of type {type(value).__name__!r} could not be converted to {kind}")
    return _raise(key, f"={shown}: must be {_describe_type(annotation)}")


def _raise(key: str, detail: str) -> Any:
    raise OptionError(key, detail)


def requirement(annotation: Any, failed: str = "") -> str:
    """What ``annotation``'s rules ask, in the words of the errors: ``must be > 0``, ``must be in [0, 1)``,
    ``must be one of: max, min``, ``every element must be > 0``, ``must not be empty``. ``failed``: the pydantic
    error type, for a bound at float32's largest value (``lr``), named only when it is the one exceeded."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        inner, metadata = args[0], _constraints(args[1:])
        return _words(metadata, failed) or requirement(inner, failed)
    if origin is Literal:
        return "must be one of: " + ", ".join(_plain(choice) for choice in args)
    if origin in (typing.Union, types.UnionType):
        found = [requirement(a, failed) for a in args if a is not type(None)]
        return next((words for words in found if words), "")
    if origin in (list, tuple, set, Sequence) and args:
        inner = requirement(args[0], failed)
        return f"every element {inner}" if inner else ""
    return ""


def _words(metadata: dict[str, Any], failed: str) -> str:
    if "description" in metadata:
        return metadata["description"]
    if "min_length" in metadata and metadata.get("max_length") == metadata["min_length"]:
        return f"must have length {metadata['min_length']}"
    if "min_length" in metadata:
        return "must not be empty"
    if failed == "finite_number":
        return "must be a finite number" + _words(metadata, "").removeprefix("must be")
    if metadata.get("le") == FLOAT32_MAX:  # float32 parameters make a larger value inf
        high_failed = failed.startswith("less_than")
        finite = f" and finite in float32 (at most {FLOAT32_MAX:.4g})" if high_failed else ""
        return _words({k: v for k, v in metadata.items() if k != "le"}, failed) + finite
    low = ("(", metadata["gt"]) if "gt" in metadata else ("[", metadata["ge"]) if "ge" in metadata else None
    high = (")", metadata["lt"]) if "lt" in metadata else ("]", metadata["le"]) if "le" in metadata else None
    if low and high:
        return f"must be in {low[0]}{_plain(low[1])}, {_plain(high[1])}{high[0]}"
    if low:
        return f"must be {'>' if low[0] == '(' else '>='} {_plain(low[1])}"
    if high:
        return f"must be {'<' if high[0] == ')' else '<='} {_plain(high[1])}"
    return ""


def _constraints(metadata: tuple) -> dict[str, Any]:
    """The ``gt``/``ge``/``lt``/``le``/``min_length``/``description`` of a parameter's pydantic metadata."""
    found: dict[str, Any] = {}
    for item in metadata:
        if getattr(item, "description", None):
            found["description"] = item.description
        for constraint in getattr(item, "metadata", [item]):
            for name in ("gt", "ge", "lt", "le", "min_length", "max_length"):
                if getattr(constraint, name, None) is not None:
                    found[name] = getattr(constraint, name)
    return found


def _plain(value: Any) -> str:
    """A value as the YAML writes it: true, false, null, 0.5."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


def _shown(value: Any, annotation: Any) -> str:
    """The value in the error, as the config holds it after conversion (an int given to a float option: -1.0)."""
    if _base(annotation) is float and isinstance(value, int) and not isinstance(value, bool):
        return str(float(value))
    if isinstance(value, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return str(value)
    return _plain(value) if isinstance(value, bool) or value is None else str(value)


def _base(annotation: Any) -> Any:
    """The plain type under ``Annotated`` and ``| None``: float for ``Annotated[float, ...] | None``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _base(args[0])
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        return _base(members[0]) if len(members) == 1 else annotation
    return annotation


def _describe_type(annotation: Any) -> str:
    text = str(_strip(annotation)).replace("typing.", "")
    return f"of type {text}"


def _strip(annotation: Any) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    return _strip(args[0]) if origin is Annotated else annotation


def _finite_only(annotation: Any) -> bool:
    """Whether ``annotation`` (under ``| None``) carries :data:`FINITE`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return any(item is FINITE for item in args[1:]) or _finite_only(args[0])
    if origin in (typing.Union, types.UnionType):
        return any(_finite_only(a) for a in args)
    return False


def _element(annotation: Any) -> Any:
    """``X`` of ``list[X]`` (under ``Annotated`` and ``| None``)."""
    args = typing.get_args(_base(annotation))
    return args[0] if args else Any


def _dataclass_in(annotation: Any) -> type | None:
    """The dataclass ``annotation`` names (alone, or in a union: ``FeatureSpec | Mapping[str, Any]``), else None."""
    annotation = _strip(annotation)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next(filter(None, (_dataclass_in(a) for a in typing.get_args(annotation))), None)
    return None


def _element_dataclass(annotation: Any, container: type) -> type | None:
    """The dataclass of the elements of ``list[X]`` (``container=list``) or the values of ``dict[str, X]``."""
    annotation = _strip(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next(filter(None, (_element_dataclass(a, container) for a in typing.get_args(annotation))), None)
    origins = (list,) if container is list else (dict, Mapping)
    if typing.get_origin(annotation) in origins and typing.get_args(annotation):
        return _dataclass_in(typing.get_args(annotation)[-1])
    return None


def _name(target: Any) -> str:
    return f"{target.__module__}.{target.__qualname__}"


@functools.cache
def _parameters(target: Any) -> Mapping[str, inspect.Parameter] | None:
    """``target``'s parameters; a class whose ``__init__`` passes ``**kwargs`` on to its base's gets those too."""
    try:
        parameters = dict(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return None
    base = _base_class(target)
    if base is not None and any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        inherited = _parameters(base) or {}
        parameters = {n: p for n, p in parameters.items() if p.kind != inspect.Parameter.VAR_KEYWORD}
        parameters |= {n: p for n, p in inherited.items() if n not in parameters}
    return parameters


def _base_class(target: Any) -> type | None:
    """The nearest base class of ``target`` with an ``__init__`` of its own (not object's)."""
    if not isinstance(target, type):
        return None
    return next((c for c in target.__mro__[1:] if "__init__" in vars(c) and c is not object), None)


@functools.cache
def _hints(target: Any) -> dict[str, Any]:
    """The annotations of ``target``'s parameters, resolved (those that do not resolve are not checked)."""
    base = _base_class(target)
    inherited = _hints(base) if base is not None else {}
    return inherited | _own_hints(target)


def _own_hints(target: Any) -> dict[str, Any]:
    function = inspect.unwrap(target.__init__) if isinstance(target, type) and not _is_dataclass(target) else target
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception:  # a name imported for type checkers only: resolve one at a time
        hints = {}
        namespace = getattr(inspect.unwrap(function), "__globals__", {})
        for name, text in getattr(function, "__annotations__", {}).items():
            try:
                hints[name] = eval(text, namespace) if isinstance(text, str) else text  # noqa: S307 (our own code)
            except Exception:
                continue
        return hints


def _is_dataclass(target: Any) -> bool:
    return dataclasses.is_dataclass(target)


@functools.cache
def _rules_of(init: Callable) -> dict[str, tuple[TypeAdapter, Any]]:
    """The adapters of the parameters of ``init`` that a config can set: those with value rules, and those of plain
    types (numbers, strings, lists of them); objects (a model, a Path) are left to duck typing."""
    return {
        name: adapter
        for name, annotation in _hints(init).items()
        if name != "return"
        and (requirement(annotation) or _is_plain(annotation))
        and (adapter := _adapter(annotation)) is not None
    }


def _is_plain(annotation: Any) -> bool:
    """Made of None, bool, int, float, str and Literal, in unions, lists, tuples and mappings."""
    if annotation in (type(None), bool, int, float, str):
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return True
    if origin is Annotated:
        return _is_plain(args[0])
    if origin in (typing.Union, types.UnionType, list, tuple, dict, Sequence, Mapping):
        return bool(args) and all(_is_plain(a) for a in args if a is not Ellipsis)
    return False


def _adapter(annotation: Any) -> tuple[TypeAdapter, Any] | None:
    if annotation is None or annotation is Any:
        return None
    # typing's equality ignores a Literal's order (Literal["skip", "error"] == Literal["error", "skip"]): the text
    # is part of the key, so that each annotation's errors list its own choices in its own order
    return _cached_adapter(annotation, repr(annotation))


@functools.cache
def _cached_adapter(annotation: Any, text: str) -> tuple[TypeAdapter, Any] | None:
    from pydantic import ConfigDict, TypeAdapter

    try:
        return TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True)), annotation
    except Exception:  # a type pydantic cannot check (a protocol, a torch type it cannot see): left to the call
        return None
