"""Single-instance Python applications: the first launch holds a TCP port on localhost,
later launches hand it their command-line arguments."""

__version__ = "4.1.0"  # the one place the version is written (pyproject.toml reads it)

from ._outcome import MultipleSingletonsError
from ._singleton import Socket_Singleton

__all__ = ["Launch", "MultipleSingletonsError", "Socket_Singleton", "__version__"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._launch import Launch
del TYPE_CHECKING


def __getattr__(name: str) -> object:
    # Launch (what observers receive) is loaded with the host: a launch turned away never needs it.
    if name == "Launch":
        from ._launch import Launch

        return Launch
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def __dir__() -> "list[str]":
    return sorted(set(globals()) | {"Launch"})
