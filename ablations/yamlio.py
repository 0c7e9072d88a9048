"""Strict YAML: safe types only, and a duplicate key in a mapping is an error, not "last one wins"."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml


class YamlError(ValueError):
    def __init__(self, path: Path | str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = str(path)
        self.message = message


class StrictLoader(yaml.SafeLoader):
    pass


# YAML 1.1 (PyYAML) reads 1e-4 as a string; researchers write learning rates that way. Resolve floats
# as YAML 1.2 does: an exponent without a dot or sign is still a float.
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {line}; first at line {seen[key].start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_strict(path: Path | str) -> Any:
    """Parse a YAML file with safe types only; raise YamlError with the file and the problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise YamlError(path, "no such file") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as err:
        raise YamlError(path, f"cannot be read as a text file ({err.__class__.__name__})") from None
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except yaml.constructor.ConstructorError as err:
        if "could not determine a constructor" in str(err.problem):
            where = f" at line {err.problem_mark.line + 1}" if err.problem_mark else ""
            raise YamlError(path, f"YAML tags that construct objects are not allowed ({err.problem}){where}") from None
        raise YamlError(path, str(err.problem)) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise YamlError(path, f"is not valid YAML: {problem}{where}") from None
