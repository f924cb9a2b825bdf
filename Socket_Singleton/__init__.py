"""Single-instance Python applications: the first launch holds a TCP port on localhost,
later launches hand it their command-line arguments."""

from __future__ import annotations

from ._errors import MultipleSingletonsError
from ._singleton import Socket_Singleton
from ._version import __version__

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


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"Launch"})
