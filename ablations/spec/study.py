"""Study files: several sweeps planned, launched, followed and reported as one.

    study: paper-ablations
    description: "every ablation table of the paper"
    sweeps: [pe.yaml, reduction.yaml, emsa.yaml, attention.yaml, stem.yaml]   # relative to this file

Every command that takes sweep files (ablations.run / status / cancel, analysis.report) takes study files
too, and several of either: `sweep_paths` expands them, in order, each sweep once.
"""
from __future__ import annotations

from pathlib import Path

from ablations.spec.errors import InputError
from ablations.spec.sweep import NAME_PATTERN
from ablations.spec.yamlio import YamlError, load_yaml_strict

KEYS = {"study": "the study's name", "description": "what it is (optional)",
        "sweeps": "the sweep files, relative to the study file"}


def is_study(raw) -> bool:
    return isinstance(raw, dict) and "sweeps" in raw and "axes" not in raw


def read_study(path: Path) -> list[Path]:
    """The sweep files a study file lists; InputError naming the file and key for anything wrong."""
    try:
        raw = load_yaml_strict(path)
    except YamlError as err:
        raise InputError(path, "<file>", err.message) from None
    for key in raw:
        if key not in KEYS:
            raise InputError(path, str(key), "unknown key; allowed keys are: "
                             + "; ".join(f"{k} ({v})" for k, v in KEYS.items()))
    if not isinstance(raw.get("study"), str) or not NAME_PATTERN.fullmatch(raw["study"]):
        raise InputError(path, "study", "missing or not a folder name (letters, digits, '_', '-', '.'); a study "
                                        "names itself, e.g. study: paper-ablations")
    sweeps = raw["sweeps"]
    if not isinstance(sweeps, list) or not sweeps or not all(isinstance(s, str) and s for s in sweeps):
        raise InputError(path, "sweeps", "expected a non-empty list of sweep file names, e.g. [pe.yaml, "
                                         "reduction.yaml]")
    out = []
    for name in sweeps:
        sweep = (path.parent / name)
        if not sweep.exists():
            raise InputError(path, "sweeps", f"{name!r}: no such file beside the study ({sweep})")
        if not sweep.is_file():
            raise InputError(path, "sweeps", f"{name!r}: {sweep} is not a regular file (a folder, a FIFO or a "
                                             "device); list sweep files")
        if is_study(_peek(sweep)):
            raise InputError(path, "sweeps", f"{name!r} is a study file itself; a study lists sweep files")
        out.append(sweep)
    return out


def _peek(path: Path):
    try:
        return load_yaml_strict(path)
    except YamlError:
        return None  # the sweep loader names the problem


def sweep_paths(paths: list[Path]) -> list[Path]:
    """Sweep files given on the command line, study files expanded in place; each sweep once."""
    out: list[Path] = []
    for path in paths:
        path = Path(path)
        expanded = read_study(path) if path.is_file() and path.suffix in (".yaml", ".yml") and is_study(_peek(path)) \
            else [path]
        for sweep in expanded:
            if sweep.resolve() not in {p.resolve() for p in out}:
                out.append(sweep)
    return out


def study_name(given: list[Path], sweeps: list[Path]) -> str:
    """What a report of these files is called: the study file's name when one study file is given, else the
    sweeps' file names joined with "+"."""
    given = [Path(p) for p in given]
    if len(given) == 1 and given[0].is_file() and is_study(raw := _peek(given[0])):
        return str(raw["study"])
    return "+".join(p.stem for p in sweeps)
