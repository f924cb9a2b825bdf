"""Single-instance Python applications: the first launch holds a TCP port on localhost,
later launches hand it their command-line arguments."""

from ._dispatch import Launch
from ._errors import MultipleSingletonsError
from ._singleton import Socket_Singleton
from ._version import __version__

__all__ = ["Launch", "MultipleSingletonsError", "Socket_Singleton", "__version__"]
