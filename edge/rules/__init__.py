"""Learning rules by name: `snn-edge train --rule NAME` looks them up here.

A rule module registers its class with `register_rule`; add the import of new rule modules to
`_BUILTIN_MODULES` (imported lazily, so a rule with heavy dependencies costs nothing until used).
"""
from __future__ import annotations

import importlib

from edge.errors import SnnEdgeError
from edge.rules.base import LearningRule

RULES: dict[str, type[LearningRule]] = {}

# name -> module that defines and registers it
_BUILTIN_MODULES = {
    "bptt": "edge.rules.bptt",
    "normad": "edge.rules.normad",
    "na": "edge.rules.na",
    "bell-surrogate": "edge.rules.bell_surrogate",
    "solsa": "edge.rules.solsa",
    "gem": "edge.rules.gem",
    "decolle": "edge.rules.decolle",
}


def register_rule(cls: type[LearningRule]) -> type[LearningRule]:
    RULES[cls.name] = cls
    return cls


def rule_names() -> list[str]:
    return sorted(set(RULES) | set(_BUILTIN_MODULES))


def get_rule_class(name: str) -> type[LearningRule]:
    if name not in RULES and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    if name not in RULES:
        raise SnnEdgeError(f"--rule: expected one of {', '.join(rule_names())}, got {name!r}")
    return RULES[name]


def make_rule(name: str, **options) -> LearningRule:
    return get_rule_class(name)(**options)


__all__ = ["LearningRule", "RULES", "register_rule", "rule_names", "get_rule_class", "make_rule"]
