"""The test suite: ``python -m unittest tests`` runs it all, ``python -m unittest
tests.TestConcurrency`` one class, and plain ``python -m unittest`` (discovery) runs it all too.
Every TestCase class of the ``test_*`` modules is re-exported here under its own (unique) name so
that the second form works; ``load_tests`` loads each module once, so that neither the first form
nor discovery runs a test twice (once from its module, once from this package)."""

import fnmatch
import importlib
import pkgutil
import unittest

_MODULES = []
for _module in pkgutil.iter_modules(__path__):
    if _module.name.startswith("test_"):
        _mod = importlib.import_module("%s.%s" % (__name__, _module.name))
        _MODULES.append(_mod)
        for _name, _value in vars(_mod).items():
            if isinstance(_value, type) and issubclass(_value, unittest.TestCase) \
                    and _value.__module__ == _mod.__name__:
                if _name in globals():
                    raise ImportError("two test classes are named %s" % _name)
                globals()[_name] = _value
del _module, _mod, _name, _value


def load_tests(loader, standard_tests, pattern):
    """The unittest load_tests protocol: the tests of every ``test_*`` module (matching
    *pattern* under discovery), instead of the re-exported classes in *standard_tests*."""
    suite = unittest.TestSuite()
    for module in _MODULES:
        filename = module.__name__.rpartition(".")[2] + ".py"
        if pattern is None or fnmatch.fnmatch(filename, pattern):
            suite.addTests(loader.loadTestsFromModule(module, pattern=pattern))
    return suite
