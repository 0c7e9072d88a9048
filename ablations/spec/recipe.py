"""Recipes: training protocols as YAML files a reader can check and copy (ablations/spec/recipes/*.yaml).

    description: what it is, in one paragraph
    source: where the protocol comes from, so a reader can check it
    overrides:                      # dotted config keys -> values (ablations.spec.config)
      optim.lr: 0.1
    per_model:                      # optional: more overrides when model.name is that model
      rest_base: {model.drop_path_rate: 0.2}

A run's config is resolved as defaults -> recipe overrides -> per_model[model.name] -> the caller's overrides
(a sweep's levels, the command line), where model.name is the final one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablations.spec.config import ModelConfig, RunConfig, check_value, flatten, with_overrides
from ablations.spec.errors import InputError, bounded_repr
from ablations.spec.yamlio import YamlError, errors_located, load_yaml_strict, read_text_bounded

__all__ = ["RECIPES_DIR", "Recipe", "RecipeError", "list_recipes", "load_recipe", "load_yaml_strict", "resolve"]

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
TOP_KEYS = {"description": str, "source": str, "overrides": dict, "per_model": dict}
REQUIRED = ("description", "source", "overrides")


RecipeError = InputError  # one error type for every input (ablations.spec.errors)


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    source: str
    overrides: dict[str, Any] = field(default_factory=dict)
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        return Path(text)
    path = RECIPES_DIR / f"{text}.yaml"
    if not path.is_file():
        raise RecipeError(text, "<recipe>", f"unknown recipe; known recipes: {', '.join(list_recipes())} "
                                            "(or give the path of a .yaml file)")
    return path


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A recipe by name (ablations/spec/recipes/NAME.yaml) or path, with every key and value checked; InputError
    names the file, the key and its line."""
    path = recipe_path(name_or_path)
    with errors_located(path):
        return _load_recipe(path)


def _load_recipe(path: Path) -> Recipe:
    try:
        raw = load_yaml_strict(path)
    except YamlError as err:
        raise RecipeError(path, _key_at_line(path, err.message), err.message) from None
    if not isinstance(raw, dict):
        raise RecipeError(path, "<file>", f"expected a mapping with keys {', '.join(TOP_KEYS)}")
    for key, value in raw.items():
        if key not in TOP_KEYS:
            raise RecipeError(path, str(key), f"unknown key; a recipe has: {', '.join(TOP_KEYS)}")
        if key == "overrides" and value is None:
            continue
        if not isinstance(value, TOP_KEYS[key]):
            raise RecipeError(path, key, f"expected a {_kind(TOP_KEYS[key])}, got "
                                         f"{type(value).__name__} {bounded_repr(value)}")
    for key in REQUIRED:
        if key not in raw:
            raise RecipeError(path, key, "missing")
    overrides = _check_overrides(path, "overrides", raw.get("overrides") or {})
    per_model = {}
    for model, values in (raw.get("per_model") or {}).items():
        where = f"per_model.{model}"
        if not isinstance(values, dict):
            raise RecipeError(path, where, f"expected a mapping of config keys, got {type(values).__name__}")
        _check_value(path, where, "model.name", model)
        per_model[model] = _check_overrides(path, where, values)
        if "model.name" in per_model[model]:
            raise RecipeError(path, f"{where}.model.name", "per_model entries cannot change the model")
    recipe = Recipe(path.stem, raw["description"].strip(), raw["source"].strip(), overrides, per_model)
    for model in per_model:  # every combination resolves to a valid config
        try:
            resolve(recipe, {"model.name": model})
        except ValueError as err:
            raise RecipeError(path, f"per_model.{model}", str(err)) from None
    return recipe


def resolve(recipe: Recipe, overrides: dict[str, Any] | None = None) -> RunConfig:
    """defaults -> recipe.overrides -> recipe.per_model[final model.name] -> `overrides` (dotted keys)."""
    overrides = flatten(overrides or {})
    model = overrides.get("model.name", recipe.overrides.get("model.name", ModelConfig.name))
    return with_overrides(RunConfig(), {**recipe.overrides, **recipe.per_model.get(model, {}), **overrides})


def _check_overrides(path: Path, where: str, values: dict) -> dict[str, Any]:
    try:
        flat = flatten(values)
    except ValueError as err:
        raise RecipeError(path, where, str(err)) from None
    checked = {}
    for key, value in flat.items():
        checked[key] = _check_value(path, f"{where}.{key}", key, value)
    return checked


def _check_value(path: Path, where: str, key: str, value: Any) -> Any:
    try:
        return check_value(key, value)
    except ValueError as err:
        message = getattr(err, "message", str(err))
        if isinstance(value, str) and _is_number(value):
            message += f" (YAML reads {bounded_repr(value)} as text: write it with a dot, e.g. 1.0e-4, or in decimals)"
        raise RecipeError(path, where, message) from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _kind(t: type) -> str:
    return {str: "string", dict: "mapping"}[t]


def _key_at_line(path: Path, message: str) -> str:
    """The mapping key on the line a YAML error points at ("<yaml>" if there is none)."""
    found = re.search(r"line (\d+)", message)
    duplicate = re.search(r"duplicate key '([^']*)'", message)
    if duplicate:
        return duplicate.group(1)
    if found:
        lines = read_text_bounded(path).splitlines()
        number = int(found.group(1))
        if 1 <= number <= len(lines):
            key = re.match(r"\s*([^:#\s][^:#]*?)\s*:", lines[number - 1])
            if key:
                return key.group(1)
    return "<yaml>"
