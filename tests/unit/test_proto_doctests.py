"""Every example in syncproto's docstrings runs and shows what the code does."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import syncproto

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(syncproto.__path__, prefix="syncproto.") if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, report=True)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"


def test_the_clock_examples_are_among_them() -> None:
    finder = doctest.DocTestFinder()
    assert any(t.examples for t in finder.find(importlib.import_module("syncproto.hlc")))
