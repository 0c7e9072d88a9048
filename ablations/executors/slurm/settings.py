"""SLURM settings of a sweep (its `slurm:` block, the command line, per-level overrides), validated: nothing
that reaches an #SBATCH line can break out of it.

    settings = SlurmSettings.from_mapping(sweep_yaml.get("slurm", {}), source="sweeps/table5.yaml")
    settings = settings.with_cli(partition="learnfair", time_min=600)      # None = not given
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from ablations.spec.config import bounded_repr, check_field, knob, rule_problem
from ablations.spec.errors import InputError

# A value that goes into an #SBATCH line of the job script: no newline, quote or shell metacharacter.
SBATCH_VALUE = dict(pattern=r"[A-Za-z0-9_.,:=+@%/-]{1,200}",
                    pattern_text="sbatch values use letters, digits and _ . , : = + @ % / - only (no spaces, "
                                 "quotes, newlines or shell characters), at most 200 characters")


@dataclass(frozen=True)
class SlurmSettings:
    """Resources and placement of each array task; None leaves the choice to the cluster's defaults."""

    partition: str | None = knob(None, **SBATCH_VALUE)
    account: str | None = knob(None, **SBATCH_VALUE)
    qos: str | None = knob(None, **SBATCH_VALUE)
    constraint: str | None = knob(None, **SBATCH_VALUE)
    time_min: int = knob(240, min=1)
    nodes: int = knob(1, min=1)
    gpus_per_node: int = knob(0, min=0)
    tasks_per_node: int = knob(1, min=1)  # > 1: torch.distributed, one process per task (one per GPU)
    cpus_per_task: int | None = knob(None, min=1)
    mem_gb: float | None = knob(None, gt=0.0)
    array_parallelism: int = knob(64, min=1)  # at most this many tasks of the array run at once
    signal_delay_s: int = knob(120, min=0)  # USR2 this long before the time limit: checkpoint and requeue
    max_num_timeout: int = knob(3, min=0)  # requeues after a time limit before the run is given up
    additional_parameters: dict[str, Any] = knob(factory=dict)  # any other sbatch option
    setup: tuple[str, ...] = knob(factory=tuple)  # shell lines run before the job (module load, venv activation)
    per_level: dict[str, dict] = knob(factory=dict)  # level name -> settings for the cells with that level

    @classmethod
    def from_mapping(cls, data: dict | None, source: str) -> SlurmSettings:
        """Settings from a sweep file's `slurm:` mapping; unknown keys and bad values raise InputError."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise InputError(source, "slurm", f"expected a mapping, got {type(data).__name__}")
        return cls()._replaced(data, source)

    def with_cli(self, **overrides: Any) -> SlurmSettings:
        """A copy with command-line values applied; a None value means "not given" and changes nothing."""
        return self._replaced({k: v for k, v in overrides.items() if v is not None}, "command line")

    def _replaced(self, values: dict, source: str) -> SlurmSettings:
        names = [f.name for f in dataclasses.fields(self)]
        checked = {}
        for key, value in values.items():
            if key not in names:
                raise InputError(source, f"slurm.{key}", f"unknown setting; allowed: {', '.join(names)}")
            if key == "additional_parameters":
                checked[key] = _check_sbatch_options(source, value)
            elif key == "setup":
                checked[key] = _check_setup(source, value)
            elif key == "per_level":
                checked[key] = _check_per_level(source, value, self)
            else:
                checked[key] = check_field(SlurmSettings, key, value, key=f"slurm.{key}", source=source)
        settings = dataclasses.replace(self, **checked)
        if settings.time_min * 60 <= settings.signal_delay_s:
            key = "slurm.time_min" if "time_min" in values or "signal_delay_s" not in values else "slurm.signal_delay_s"
            raise InputError(source, key, f"a time limit of {settings.time_min} min cannot fit the checkpoint signal "
                                          f"sent {settings.signal_delay_s} s before it (signal_delay_s): raise "
                                          "time_min or lower signal_delay_s")
        return settings


    def for_levels(self, levels: list[str]) -> SlurmSettings:
        """These settings with `per_level` applied for a cell whose levels are `levels` (in axis order)."""
        settings = dataclasses.replace(self, per_level={})
        for level in levels:
            if level in self.per_level:
                settings = settings._replaced(self.per_level[level], f"slurm.per_level.{level}")
        return settings


SBATCH_KEY = r"[a-z][a-z0-9_-]{0,40}"
SETUP_LINE = r"[^\x00-\x1f\x7f]{1,500}"  # one printable line: no newline, no control character


def _check_setup(source: str, value: Any) -> tuple[str, ...]:
    """Setup lines: the user's own shell lines (that is their purpose), one line each, printable, bounded."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or len(value) > 50:
        raise InputError(source, "slurm.setup", f"expected a list of shell lines, got {bounded_repr(value)}")
    for i, line in enumerate(value):
        if not isinstance(line, str) or not re.fullmatch(SETUP_LINE, line):
            raise InputError(source, f"slurm.setup[{i}]", f"{bounded_repr(line)}: one line of 1 to 500 printable "
                                                          "characters (no newline)")
    return tuple(value)


def _check_per_level(source: str, value: Any, base: SlurmSettings) -> dict[str, dict]:
    """per_level: {level name: {time_min: ..., gpus_per_node: ...}}, each checked as a slurm: block would be."""
    if not isinstance(value, dict):
        raise InputError(source, "slurm.per_level", f"expected a mapping of level name -> settings, got "
                                                    f"{bounded_repr(value)}")
    for level, settings in value.items():
        if not isinstance(settings, dict) or {"per_level"} & set(settings):
            raise InputError(source, f"slurm.per_level.{bounded_repr(level)}", "expected a mapping of settings")
        dataclasses.replace(base, per_level={})._replaced(settings, source)  # raises InputError if bad
    return {str(k): dict(v) for k, v in value.items()}


def _check_sbatch_options(source: str, value: Any) -> dict[str, Any]:
    """Extra sbatch options: option names and values that cannot break out of an #SBATCH line."""
    where = "slurm.additional_parameters"
    if not isinstance(value, dict):
        raise InputError(source, where, f"expected a mapping of sbatch option -> value, got {bounded_repr(value)}")
    for key, option in value.items():
        if not isinstance(key, str) or not re.fullmatch(SBATCH_KEY, key):
            raise InputError(source, f"{where}.{bounded_repr(key)}", "sbatch option names are lower-case letters, "
                                                                   "digits and '-' (e.g. exclusive, mail-type)")
        if isinstance(option, bool):
            continue
        if not isinstance(option, str | int | float):
            raise InputError(source, f"{where}.{key}", f"expected a string, number or true, got "
                                                       f"{type(option).__name__}")
        problem = rule_problem(str(option), SBATCH_VALUE)
        if problem:
            raise InputError(source, f"{where}.{key}", problem)
    return dict(value)
