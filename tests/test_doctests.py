"""The examples in the package's docstrings run and give what they show (they are documentation: keep them true)."""
import doctest
import importlib
import pkgutil

import pytest

import latency
import nas

MODULES = sorted(m.name for pkg in (latency, nas) for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{name}: {result.failed} docstring example(s) failed"
