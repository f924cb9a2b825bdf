"""Single-instance Python applications: the first launch holds a TCP port on localhost,
later launches hand it their command-line arguments."""

__version__ = "3.0.0"  # the one place the version is written (pyproject.toml reads it)

from ._errors import MultipleSingletonsError
from ._singleton import Socket_Singleton

__all__ = ["Launch", "MultipleSingletonsError", "Socket_Singleton", "__version__"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._dispatch import Launch
del TYPE_CHECKING


def __getattr__(name: str) -> object:
    # Launch lives with the host's dispatcher, which a launch that is turned away never loads.
    if name == "Launch":
        from ._dispatch import Launch

        return Launch
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def __dir__() -> "list[str]":
    return sorted(set(globals()) | {"Launch"})
