"""Strict YAML: safe types only, and a duplicate key in a mapping is an error, not "last one wins".

Loading is bounded in time and memory before anything is built: at most MAX_BYTES of text, collections
nested at most MAX_DEPTH deep, at most MAX_NODES values once aliases are expanded (an "alias bomb" of nine
nested nine-fold aliases is 9**9 values from a few hundred bytes), no alias to a collection that contains it.
The check walks the parser's event stream (iterative: no recursion to overflow) and counts each alias as the
size of what it names. Mapping keys must be plain values (a list as a key is refused); merge keys (`<<`) are
refused with a message saying to write the keys out.
"""
from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from ablations.spec.errors import InputError, bounded_repr

MAX_BYTES = 1_000_000
MAX_DEPTH = 32
MAX_NODES = 100_000
MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlError(InputError):
    """A file that is not (strict) YAML: InputError(path, "<file>", message)."""

    def __init__(self, path: Path | str, message: str, line: int | None = None):
        super().__init__(path, "<file>", message, line=line)
        self.path = str(path)


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
        line = key_node.start_mark.line + 1
        if key_node.tag == MERGE_TAG:
            raise yaml.constructor.ConstructorError(
                None, None, f"merge keys (<<) are not supported (line {line}): write the keys out", key_node.start_mark)
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, f"mapping keys must be plain values, not a {key_node.id} (line {line})",
                key_node.start_mark)
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {bounded_repr(key)} (line {line}; first at line "
                            f"{seen[key].start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_text_bounded(path: Path | str, limit: int = MAX_BYTES) -> str:
    """A text file's content, reading at most `limit` + 1 bytes: an endless file (/dev/zero) or a huge one is
    refused without being read whole, and a FIFO, a device or a socket without being waited on (opened
    non-blocking, refused unless a regular file). YamlError naming the file otherwise."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise YamlError(path, "no such file") from None
    except OSError as err:
        raise YamlError(path, f"cannot be opened ({err.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise YamlError(path, "is a folder, not a file")
        if not stat.S_ISREG(mode):
            raise YamlError(path, "is not a regular file (a FIFO, a device or a socket); give a YAML file")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    except OSError as err:
        raise YamlError(path, f"cannot be read ({err.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise YamlError(path, f"is too large (more than {limit:,} bytes; at most {limit:,})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise YamlError(path, "cannot be read as a text file (not UTF-8)") from None


def load_yaml_strict(path: Path | str) -> Any:
    """Parse a YAML file with safe types only; raise YamlError with the file and the problem."""
    path = Path(path)
    text = read_text_bounded(path)
    try:
        problem = shape_problem(text)
        if problem:
            raise YamlError(path, problem)
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except RecursionError:  # not expected after shape_problem; never a traceback
        raise YamlError(path, f"is nested too deeply (at most {MAX_DEPTH} levels)") from None
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


def shape_problem(text: str) -> str | None:
    """What makes `text` too big to load (size, depth, values after alias expansion), or None; never raises
    for YAML syntax (the loader reports that)."""
    if len(text) > MAX_BYTES:
        return f"is too large ({len(text):,} characters; at most {MAX_BYTES:,})"
    sizes: dict[str, int] = {}
    open_: list[list] = [[None, 0]]  # [anchor, values so far] of each open collection; the root at the bottom
    try:
        for event in yaml.parse(text, Loader=StrictLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                if len(open_) > MAX_DEPTH:
                    return f"is nested too deeply (line {event.start_mark.line + 1}; at most {MAX_DEPTH} levels)"
                open_.append([event.anchor, 1])
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                anchor, size = open_.pop()
                if anchor is not None:
                    sizes[anchor] = size
            elif isinstance(event, yaml.AliasEvent):
                if event.anchor not in sizes:
                    if any(entry[0] == event.anchor for entry in open_):
                        return f"has an alias inside what it names (line {event.start_mark.line + 1}): a loop"
                    continue  # undefined alias: the loader says so
                size = sizes[event.anchor]
            elif isinstance(event, yaml.ScalarEvent):
                size = 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            else:
                continue
            open_[-1][1] += size
            if open_[-1][1] > MAX_NODES or sum(entry[1] for entry in open_) > MAX_NODES:
                return (f"expands to more than {MAX_NODES:,} values (aliases repeat what they name; line "
                        f"{event.start_mark.line + 1})")
    except yaml.YAMLError:
        return None
    return None


def key_lines(path: Path | str) -> dict[str, int]:
    """The line (1-based) of every mapping key and list item, by dotted path: "axes[0].levels.none" -> 12.

    Errors found after parsing use it to say where the key is. Best effort: {} for a file that does not parse.
    """
    try:
        text = read_text_bounded(path)  # bounded, never waits on a FIFO: this runs after an error too
        if shape_problem(text):
            return {}
        root = yaml.compose(text, Loader=StrictLoader)
    except (YamlError, yaml.YAMLError, RecursionError):
        return {}
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str, depth: int) -> None:
        if depth > 50:
            return
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                path_ = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
                lines.setdefault(path_, key_node.start_mark.line + 1)
                walk(value_node, path_, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                path_ = f"{prefix}[{i}]"
                lines.setdefault(path_, item.start_mark.line + 1)
                walk(item, path_, depth + 1)

    if root is not None:
        walk(root, "", 0)
    return lines


@contextlib.contextmanager
def errors_located(path: Path) -> Iterator[None]:
    """An InputError raised about the file `path` while validating it learns the line of its key."""
    try:
        yield
    except InputError as err:
        if err.line is None and err.file == str(path):
            err.at_line(line_of(key_lines(path), err.key))
        raise


def line_of(lines: dict[str, int], key: str | None) -> int | None:
    """The line of `key`, or of the nearest enclosing key that has one."""
    while key:
        if key in lines:
            return lines[key]
        cut = max(key.rfind("."), key.rfind("["))
        key = key[:cut] if cut > 0 else None
    return None
