"""The docs do not drift from conf/: every option of every YAML is documented, every option the docs name exists.

How docs/ names options (and so what this test reads):
- Reference pages: conf/<group>/<option>.yaml is documented on docs/reference/<first part of group>.md (conf/train.yaml
  on docs/reference/index.md, as option ``train``) under a heading ``## `<option>` `` (``features/criteo`` for
  conf/data/features/criteo.yaml on the data page). Below it, a table row ``| `key` | `default` | meaning |`` per key
  of the file (nested keys dotted, ``groups.embeddings.optimizer.lr``; mappings that only hold other keys, Hydra's
  ``_target_``-style keys and the defaults list may be left out). A default written as one code span must equal
  the YAML's value; prose there is not read.
  Files of ``@package _global_`` groups and Hydra's help and logging only need their heading.
- Everywhere in docs/ and README.md: a word of a code span or of a code block ``<group>.<key>`` (``optimizer.lr``,
  ``'++gradients.multipliers={...}'``) must be a key of some option of that group, and ``<group>=<option>`` must be
  a file of conf/<group>/ (lines with ``--config-dir``, whose folder adds options of its own, and quoted ``error:``
  messages are left out).
Pure Python (no mkdocs), fast.
"""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
# Option files that set keys of other groups (or configure Hydra's help and logging): named, keys not listed.
NAME_ONLY = ("experiment", "hparams_search", "hydra/help", "hydra/job_logging")
# A dotted name ending like this is a file (`metrics.json`, `model.pt`), not an option.
FILE_SUFFIX = re.compile(r"\.(pt|json|jsonl|yaml|yml|db|py|log|csv|tsv|txt|parquet|pq|md|partial)$")
DOTTED = re.compile(r"^(?P<group>[a-z_]+(?:\.sweeper)?)\.(?P<key>[A-Za-z_][\w@]*(?:\.[\w@]+)*)$")
CHOICE = re.compile(r"^(?P<group>[a-z_]+(?:/[a-z_]+)?)=(?P<options>[\w,]+)$")


def leaves(node: dict, prefix: str = "") -> dict[str, object]:
    """Every key of ``node`` dotted, intermediate mappings included, without Hydra's ``_x_`` keys and ``defaults``."""
    keys: dict[str, object] = {}
    for name, value in node.items():
        if name.startswith("_") or (not prefix and name == "defaults"):
            continue
        keys[prefix + name] = value
        if isinstance(value, dict):
            keys.update(leaves(value, f"{prefix}{name}."))
    return keys


def option_files() -> dict[tuple[str, str], Path]:
    """(group, option) -> file for every YAML of conf/, the root config as group '' option 'train'."""
    files = {("", "train"): CONF / "train.yaml"}
    for path in sorted(CONF.rglob("*.yaml")):
        if path.parent != CONF:
            files[(path.parent.relative_to(CONF).as_posix(), path.stem)] = path
    return files


def documented_keys(group: str) -> bool:
    return group.split("/")[0] not in ("experiment", "hparams_search") and group not in NAME_ONLY


def reference_page(group: str) -> tuple[Path, str]:
    """The page and heading name of an option of ``group``: conf/data/features/x.yaml -> data.md, `features/x`."""
    if not group:
        return REFERENCE / "index.md", ""
    top, _, rest = group.partition("/")
    return REFERENCE / f"{top}.md", f"{rest}/" if rest else ""


def read_sections(page: Path) -> dict[str, list[tuple[str, str]]]:
    """``## `option` `` heading -> the (key, default cell) of each table row ``| `key` | ... |`` below it."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in page.read_text().splitlines():
        heading = re.match(r"^## `([\w/]+)`", line)
        if heading:
            current = sections.setdefault(heading.group(1), [])
        elif current is not None and (row := re.match(r"^\|\s*`([\w.@]+)`\s*\|([^|]*)\|", line)):
            current.append((row.group(1), row.group(2).strip()))
        elif line.startswith("## "):
            current = None
    return sections


def reference_problems() -> list[str]:
    problems = []
    pages: dict[Path, dict] = {}
    for (group, option), path in option_files().items():
        page, prefix = reference_page(group)
        where = f"conf/{path.relative_to(CONF).as_posix()}"
        if not page.exists():
            problems.append(f"{where}: no reference page {page.relative_to(ROOT)}")
            continue
        sections = pages.setdefault(page, read_sections(page))
        rows = sections.pop(prefix + option, None)
        if rows is None:
            problems.append(f"{where}: no heading ## `{prefix + option}` in {page.relative_to(ROOT)}")
            continue
        keys = leaves(yaml.safe_load(path.read_text()) or {})
        documented = dict(rows)
        for key, value in keys.items():
            inner = isinstance(value, dict) and any(not name.startswith("_") for name in value)
            if key not in documented and not inner and documented_keys(group):
                problems.append(f"{where}: option key `{key}` is not documented in {page.relative_to(ROOT)}")
        for key, cell in rows:
            if key not in keys:
                problems.append(f"{page.relative_to(ROOT)}: `{prefix + option}` documents `{key}`, not in {where}")
            elif re.fullmatch(r"`[^`]*`", cell) and yaml.safe_load(cell[1:-1]) != keys[key]:
                problems.append(
                    f"{page.relative_to(ROOT)}: `{prefix + option}` gives `{key}` the default {cell}, {where} has "
                    f"{keys[key]!r}"
                )
    for page, sections in pages.items():
        problems += [f"{page.relative_to(ROOT)}: ## `{name}` is no option of conf/" for name in sections]
    return problems


def group_keys() -> tuple[dict[str, dict[str, object]], dict[str, set[str]]]:
    """Dotted config root (``optimizer``, ``data``, ``hydra.sweeper``) -> every key its options have, and
    group -> its options."""
    keys: dict[str, dict[str, object]] = {}
    options: dict[str, set[str]] = {}
    for (group, option), path in option_files().items():
        options.setdefault(group, set()).add(option)
        if not documented_keys(group) or not group or group == "hydra":
            continue
        top, _, sub = group.partition("/")
        root, prefix = (f"{top}.{sub}", "") if top == "hydra" else (top, f"{sub}." if sub else "")
        found = leaves(yaml.safe_load(path.read_text()) or {})
        keys.setdefault(root, {}).update({prefix + key: value for key, value in found.items()})
        if sub:  # the subgroup's own mapping (data.features)
            keys[root].setdefault(sub, {})
    for group in [group for group in options if group.startswith("hydra/")]:
        options[group] |= plugin_options(group)
    return keys, options


def plugin_options(group: str) -> set[str]:
    """The options of a group of Hydra's own config that Hydra's plugins register (``hydra/launcher=joblib``)."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # imports the installed plugins, which register their configs
    try:
        return {name.removesuffix(".yaml") for name in ConfigStore.instance().list(group)}
    except OSError:  # no plugin registers an option of this group
        return set()


def is_key(known: dict[str, object], key: str) -> bool:
    """``key`` is an option key (or Hydra's ``_target_`` of one), or lies inside a list or an open mapping
    (``gradients.multipliers.x``)."""
    parts = [part for part in key.split(".") if not re.fullmatch(r"_\w+_", part)]
    if not parts:
        return True
    for end in range(len(parts), 0, -1):
        head = ".".join(parts[:end])
        if head in known:
            return end == len(parts) or isinstance(known[head], list) or known[head] == {}
    return False


def named_options(text: str) -> list[tuple[int, str]]:
    """(line, word) of every word of a code span or a fenced code block; not of lines with ``--config-dir``, whose
    folder may add options and keys of its own, nor of quoted error messages (they name wrong keys on purpose)."""
    found = []
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if "--config-dir" in line:
            continue
        spans = [line] if fenced else [span for span in re.findall(r"`([^`]+)`", line) if "error:" not in span]
        found += [(number, word) for span in spans for word in span.split()]
    return found


def naming_problems() -> list[str]:
    keys, options = group_keys()
    problems = []
    for page in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        for line, token in named_options(page.read_text()):
            token = token.strip("'\"").lstrip("+~")
            where = f"{page.relative_to(ROOT)}:{line}"
            name = token.split("=", 1)[0]
            dotted = DOTTED.match(name)
            if dotted and dotted["group"] in keys and not FILE_SUFFIX.search(name):
                if not is_key(keys[dotted["group"]], dotted["key"]):
                    problems.append(f"{where}: `{name}` is no option key of conf/{dotted['group'].replace('.', '/')}/")
            choice = CHOICE.match(token)
            if choice and choice["group"] in options and choice["group"] != "hydra":
                for option in choice["options"].split(","):
                    if option not in options[choice["group"]]:
                        missing = f"conf/{choice['group']}/{option}.yaml"
                        problems.append(f"{where}: `{choice['group']}={option}`: no {missing}")
    return problems


def test_every_option_of_conf_is_documented_and_every_documented_one_exists():
    problems = reference_problems()
    assert not problems, "docs/reference does not match conf/:\n" + "\n".join(problems)


def test_every_option_the_docs_and_readme_name_exists():
    problems = naming_problems()
    assert not problems, "options named in docs/ or README.md that conf/ does not have:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", sorted(CONF.rglob("*.yaml")), ids=lambda path: path.relative_to(CONF).as_posix())
def test_no_measured_numbers_in_conf_comments(path: Path):
    """Measurements age; they belong in benchmarks/README.md, which a comment may point to."""
    measured = re.compile(r"\b(AUC|samples/s)\b[^#\n]*\d\.\d|\d+(\.\d+)?x (slower|faster)|\d+(\.\d+)?x the samples")
    comments = [line.split("#", 1)[1] for line in path.read_text().splitlines() if "#" in line]
    assert not [comment for comment in comments if measured.search(comment)]


def test_the_readme_links_to_files_that_exist():
    """mkdocs --strict checks the links inside docs/; the README's links into docs/ are checked here."""
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    missing = [link for link in links if "://" not in link and not (ROOT / link).exists()]
    assert links and not missing, f"README.md links to missing files: {missing}"
