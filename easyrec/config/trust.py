"""Which code a config read from a file may make easyrec run.

A checkpoint carries the config of the run that wrote it, and ``easyrec evaluate|predict|export`` rebuild that run
with Hydra's ``instantiate``, which imports and calls whatever a node's ``_target_`` names (``torch.load`` of a
pickle, ``pathlib.Path.write_text``, ...). So a config read from a file is untrusted: before anything is built from
it, every ``_target_`` at every depth (and every parameter a component takes as the dotted path of a function, such
as ``early_stopping.fn``) must name code easyrec ships, or code the user trusts by name.

What easyrec ships is read from its own config groups (every ``_target_`` in the YAML of ``easyrec.conf``), so the
list follows the code. The user trusts more with ``--trust-target NAME`` (repeatable) or
``EASYREC_TRUSTED_TARGETS=NAME,NAME``; ``NAME`` is a callable (``my_models.TwoTower``) or a module, trusting every
target in it and below (``my_models``). ``easyrec train`` also trusts the targets of its own config: the command line
is the user's own intent.

Example::

    trusted = TrustedTargets.from_env(["my_models"])
    check_stored_config({"model": {"_target_": "torch.load", "f": "x.pt"}}, "x.pt", trusted)
    # CheckpointError: x.pt: model._target_=torch.load is not a component easyrec ships; ...
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from easyrec.errors import CheckpointError

#: The environment variable of the targets the user trusts, comma-separated.
ENV = "EASYREC_TRUSTED_TARGETS"


@functools.cache
def shipped_targets() -> frozenset[str]:
    """Every ``_target_`` (and code path, see :func:`code_references`) in the config groups easyrec ships."""
    found: set[str] = set()

    def walk(folder: Any) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry)
            elif entry.name.endswith(".yaml"):
                found.update(target for _, target in code_references(yaml.safe_load(entry.read_text()) or {}))

    walk(resources.files("easyrec.conf"))
    return frozenset(target for target in found if isinstance(target, str))


@dataclass(frozen=True)
class TrustedTargets:
    """The targets a config read from a file may name: easyrec's own, and those the user trusts.

    Args:
        exact: callables trusted by their full dotted name.
        modules: names trusted with everything below them (``my_models`` trusts ``my_models.deep.TwoTower``).
    """

    exact: frozenset[str] = frozenset()
    modules: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, names: Iterable[str] = (), exact: Iterable[str] = ()) -> TrustedTargets:
        """easyrec's own targets, ``exact`` names, and the user's ``names`` plus those of :data:`ENV`."""
        given = [*names, *os.environ.get(ENV, "").split(",")]
        user = tuple(name.strip() for name in given if name.strip())
        named = frozenset(name for name in exact if isinstance(name, str))
        return cls(shipped_targets() | named | frozenset(user), user)

    def __contains__(self, target: object) -> bool:
        if not isinstance(target, str):
            return False
        return target in self.exact or any(target.startswith(module + ".") for module in self.modules)


def code_references(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, name)`` of every piece of code ``node`` names, depth first: each ``_target_``, at any depth
    (lists, ``_args_`` and ``_partial_`` nodes too), and each parameter that a component's class lists in its
    ``code_parameters`` (the dotted path of a function it will call). A target's class is imported to read that
    list only when the target is easyrec's own (:func:`shipped_targets` holds no code parameters of others)."""
    if isinstance(node, Mapping):
        target = node.get("_target_")
        if "_target_" in node:
            yield _join(key, "_target_"), target
        for parameter in _code_parameters(target):
            if node.get(parameter) is not None:
                yield _join(key, parameter), node[parameter]
        for name, value in node.items():
            yield from code_references(value, _join(key, str(name)))
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from code_references(value, f"{key}[{index}]")


def _code_parameters(target: Any) -> tuple[str, ...]:
    if not isinstance(target, str) or not target.startswith("easyrec."):
        return ()
    from hydra.utils import get_class

    try:
        return tuple(getattr(get_class(target), "code_parameters", ()))
    except Exception:  # not an easyrec class: it names no code parameters (and is refused unless trusted)
        return ()


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def check_stored_config(config: Mapping[str, Any], source: str, trusted: TrustedTargets) -> None:
    """CheckpointError naming the first key of ``config`` (a config read from the file ``source``) that names code
    outside ``trusted``, or that holds an interpolation (a stored config is resolved: ``${...}`` there could make
    new nodes when the config is used, unchecked)."""
    for key, value in _strings(config):
        if "${" in value:
            raise CheckpointError(
                f"{source}: config key {key} holds an interpolation ({value[:80]!r}); easyrec stores resolved configs, "
                "so this file was not written by it and is not loaded"
            )
    for key, target in code_references(config):
        if target not in trusted:
            shown = target if isinstance(target, str) else repr(target)
            raise CheckpointError(
                f"{source}: {key}={shown} is not a component easyrec ships, so a config read from a file may not "
                f"build it; if you trust this file's code, pass --trust-target {shown} (or set {ENV}={shown})"
            )


def _strings(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, Mapping):
        for name, value in node.items():
            yield from _strings(value, _join(key, str(name)))
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from _strings(value, f"{key}[{index}]")
    elif isinstance(node, str):
        yield key, node
