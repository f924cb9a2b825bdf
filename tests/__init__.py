"""The test suite: ``python -m unittest tests`` runs it all, ``python -m unittest
tests.TestConcurrency`` one class. Every TestCase class of the ``test_*`` modules is
re-exported here under its own (unique) name so that both forms work."""

import importlib
import pkgutil
import unittest

for _module in pkgutil.iter_modules(__path__):
    if _module.name.startswith("test_"):
        _mod = importlib.import_module("%s.%s" % (__name__, _module.name))
        for _name, _value in vars(_mod).items():
            if isinstance(_value, type) and issubclass(_value, unittest.TestCase) \
                    and _value.__module__ == _mod.__name__:
                if _name in globals():
                    raise ImportError("two test classes are named %s" % _name)
                globals()[_name] = _value
