"""One value per default: every option a YAML of conf/ sets equals its constructor's default, unless the YAML line
says why with the marker ``# not the default:`` (a preset, such as SGD with momentum, sets other values on purpose).

The YAMLs are those of every folder of conf/ whose nodes build components (not Hydra's own settings, nor the
experiments and searches that pin whole setups); every node with a ``_target_`` is compared, at any depth.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra.utils import get_object

from easyrec.config.arguments import HYDRA_KEYS, defaults
from easyrec.config.schema import RUN_KEYS

MARKER = "# not the default:"
CONF = Path(str(resources.files("easyrec.conf")))
# Hydra's settings, and the folders whose files override several groups at once
NOT_COMPONENTS = {"hydra", "experiment", "hparams_search"}
YAMLS = sorted(
    path
    for folder in CONF.iterdir()
    if folder.is_dir() and folder.name not in NOT_COMPONENTS
    for path in folder.rglob("*.yaml")
)


def nodes(node: yaml.Node) -> list[yaml.MappingNode]:
    """Every mapping node with a ``_target_`` key under ``node`` (itself included)."""
    found = []
    if isinstance(node, yaml.MappingNode):
        if any(key.value == "_target_" for key, _ in node.value):
            found.append(node)
        for _, child in node.value:
            found += nodes(child)
    elif isinstance(node, yaml.SequenceNode):
        for child in node.value:
            found += nodes(child)
    return found


def plain(value: Any) -> Any:
    """Tuples as lists: a YAML list stands for a tuple default."""
    return [plain(v) for v in value] if isinstance(value, list | tuple) else value


def disagreements(path: Path) -> list[str]:
    text = path.read_text()
    lines = text.splitlines()
    found = []
    for node in nodes(yaml.compose(text)):
        options = {key.value: (key, child) for key, child in node.value}
        target_name = options["_target_"][1].value
        own = defaults(get_object(target_name))
        if path.parent.name in RUN_KEYS:  # the keys the run reads from that node
            own |= defaults(RUN_KEYS[path.parent.name])
        for name, (key, child) in options.items():
            if name in HYDRA_KEYS or name not in own or not isinstance(child, yaml.ScalarNode | yaml.SequenceNode):
                continue
            value = yaml.safe_load(yaml.serialize(child))
            if isinstance(value, str) and ("${" in value or value == "???"):
                continue  # filled in from elsewhere, or by the user
            line = lines[key.start_mark.line]
            if plain(value) != plain(own[name]) and MARKER not in line:
                found.append(
                    f"{path.relative_to(CONF)}:{key.start_mark.line + 1}: {target_name} {name}={value!r}, "
                    f"its constructor's default is {own[name]!r}"
                )
    return found


def test_the_yamls_come_from_the_conf_folders():
    assert {path.parent.name for path in YAMLS} >= {"optimizer", "loss", "model", "data", "early_stopping"}


@pytest.mark.parametrize("path", YAMLS, ids=lambda path: str(path.relative_to(CONF)))
def test_a_yaml_default_is_the_constructors_unless_it_says_why(path):
    assert disagreements(path) == []
