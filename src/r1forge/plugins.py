"""User extensions without a fork: modules named in R1FORGE_PLUGINS (comma-separated) are
imported before any command or pipeline task runs, so the rewards, verifiers and rollout
engines they register (`r1forge.rewards.register`, `register_verifier`,
`r1forge.rollout.register_engine`) are known when a recipe names them."""

from __future__ import annotations

import importlib
import os

from r1forge.errors import ConfigError

PLUGINS_ENV = "R1FORGE_PLUGINS"


def load_plugins() -> list[str]:
    """Import every module R1FORGE_PLUGINS names; the names, in order."""
    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"{PLUGINS_ENV}: cannot import {name!r}: {exc}") from exc
    return names
