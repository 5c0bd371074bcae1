"""Recipes: the shipped ones validate, overrides apply, and errors name file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from r1forge.config import Recipe, load_recipe, save_resolved
from r1forge.errors import ConfigError

from .conftest import ROOT


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "recipes").glob("*.yaml")))
def test_shipped_recipes_validate(name: str) -> None:
    recipe = load_recipe(ROOT / "recipes" / name)
    assert isinstance(recipe, Recipe)


def test_overrides_and_resolved_copy(tmp_path: Path) -> None:
    recipe = load_recipe(
        ROOT / "recipes/ci.yaml", ["base.steps=3", "data.tasks.arithmetic.difficulties=[1]"]
    )
    assert recipe.base.steps == 3 and recipe.data.tasks["arithmetic"].difficulties == [1]
    save_resolved(recipe, tmp_path / "config.yaml")
    again = load_recipe(tmp_path / "config.yaml")
    assert again == recipe


def test_unknown_key_names_line(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("name: x\nbase:\n  steps: 10\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=r"r\.yaml:4: field 'base\.stepz': unknown field"):
        load_recipe(path)


def test_bad_value_names_line(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("name: x\ndata:\n  tasks:\n    arithmetic:\n      difficulties: [0, 9]\n")
    with pytest.raises(
        ConfigError, match=r"r\.yaml:5: field 'data\.tasks\.arithmetic\.difficulties'"
    ):
        load_recipe(path)


def test_bad_override_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--set base\.steps"):
        load_recipe(ROOT / "recipes/ci.yaml", ["base.steps=-1"])
    with pytest.raises(ConfigError, match="key=value"):
        load_recipe(ROOT / "recipes/ci.yaml", ["base.steps"])
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_recipe(bad)


def test_unknown_task_and_impossible_shapes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown task"):
        load_recipe(ROOT / "recipes/ci.yaml", ["data.tasks={sudoku: {}}"])
    with pytest.raises(ConfigError, match="num_heads"):
        load_recipe(ROOT / "recipes/ci.yaml", ["base.arch.num_heads=3"])
    with pytest.raises(ConfigError, match="max_position"):
        load_recipe(ROOT / "recipes/ci.yaml", ["base.seq_len=4096"])
