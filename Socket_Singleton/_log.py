"""Logging through the ``Socket_Singleton`` logger, imported only when there is something to say."""

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NAME = "Socket_Singleton"
_VERBOSE = "socket_singleton_verbose"
_logger: "Any" = None


def _get() -> "Any":
    global _logger
    if _logger is None:
        import logging  # costs several milliseconds; a quiet launch never needs it

        class VerboseHandler(logging.Handler):
            """Writes records of ``verbose=True`` instances to the current ``sys.stderr``."""

            def filter(self, record: "logging.LogRecord") -> bool:
                return bool(getattr(record, _VERBOSE, False)) and not _shown_elsewhere(record)

            def emit(self, record: "logging.LogRecord") -> None:
                try:
                    sys.stderr.write("%s: %s\n" % (NAME, self.format(record)))
                except Exception:  # noqa: BLE001 - logging's own convention
                    self.handleError(record)

        logger = logging.getLogger(NAME)
        # NullHandler keeps logging's last-resort handler from printing for quiet instances.
        logger.addHandler(logging.NullHandler())
        logger.addHandler(VerboseHandler())
        _logger = logger
    return _logger


def _shown_elsewhere(record: "Any") -> bool:
    """Whether a handler the application configured (``basicConfig``, say) will show *record*:
    then ``verbose=True`` must not print it a second time."""
    logger = _logger
    while logger.propagate and logger.parent is not None:
        logger = logger.parent
        if any(record.levelno >= handler.level for handler in logger.handlers):
            return True
    return False


def prepare() -> None:
    """Import logging now: a host logs on its failure paths, where a fresh import could fail
    (out of file descriptors, out of memory) and take the logging thread down with it."""
    _get()


def warning(verbose: bool, msg: str, *args: object, exc_info: bool = False) -> None:
    try:
        _get().warning(msg, *args, exc_info=exc_info, extra={_VERBOSE: verbose})
    except Exception:  # noqa: BLE001 - reporting a failure must never become one
        pass


def debug(verbose: bool, msg: str, *args: object) -> None:
    try:
        _get().debug(msg, *args, extra={_VERBOSE: verbose})
    except Exception:  # noqa: BLE001 - reporting a failure must never become one
        pass
