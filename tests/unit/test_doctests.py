"""Every docstring example in the riskmon package runs, imported under its own name (riskmon.*)."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import riskmon.models
import riskmon.streams


def _modules() -> list[str]:
    names = []
    for pkg in (riskmon.models, riskmon.streams):
        names.append(pkg.__name__)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
    return sorted(names)


MODULES = _modules()


def test_every_package_is_collected() -> None:
    assert {"riskmon.models.step", "riskmon.streams.cli", "riskmon.streams.processor"} <= set(MODULES)


def test_the_doctests_are_found() -> None:
    finder = doctest.DocTestFinder()
    examples = sum(len(t.examples) for m in MODULES for t in finder.find(importlib.import_module(m)))
    assert examples >= 40  # a module that stopped being found would quietly drop its examples


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
