"""Logging through the ``Socket_Singleton`` logger, imported only when there is something to say
and someone who could see it."""

import _thread
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NAME = "Socket_Singleton"
_VERBOSE = "socket_singleton_verbose"
_logger: "Any" = None
# Two threads logging first must not add the handler twice; re-entrant for a signal handler
# (which finds the handler already added, see _make); made anew in a forked child, where
# another thread may have held it.
_making = _thread.RLock()


def _new_lock() -> None:
    global _making
    _making = _thread.RLock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_new_lock)


def _get(verbose: bool) -> "Any":
    """The logger, or None when *verbose* is false and nothing has loaded ``logging``: then no
    handler exists that could show a record, and importing it (milliseconds, and a file to open
    even when out of descriptors) would only throw the record away."""
    if _logger is None:
        if not verbose and "logging" not in sys.modules:
            return None
        with _making:
            if _logger is None:
                _make()
    return _logger


def _make() -> None:
    global _logger
    import logging  # costs several milliseconds and 0.5 MiB; a quiet launch never needs it

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
    # Being a handler, it also keeps logging's last-resort handler from printing the records
    # of quiet instances. One check and one call: only a signal handler that logs for the
    # first time between the two could add a second one.
    if not any(getattr(handler, _VERBOSE, False) for handler in logger.handlers):
        handler = VerboseHandler()
        setattr(handler, _VERBOSE, True)
        logger.addHandler(handler)
    _logger = logger


def _shown_elsewhere(record: "Any") -> bool:
    """Whether a handler the application configured (``basicConfig``, say) will show *record*:
    then ``verbose=True`` must not print it a second time."""
    logger = _logger
    while logger.propagate and logger.parent is not None:
        logger = logger.parent
        if any(record.levelno >= handler.level for handler in logger.handlers):
            return True
    return False


def prepare(verbose: bool) -> None:
    """Import logging now if a record could be shown: a host logs on its failure paths, where
    a fresh import could fail (out of file descriptors, out of memory). A quiet host whose
    application has not loaded ``logging`` has no one to show a record to, and imports nothing
    later either (see ``_get``); an application that loads it later gives the host its copy."""
    _get(verbose)


def warning(verbose: bool, msg: str, *args: object, exc_info: bool = False) -> None:
    try:
        logger = _get(verbose)
        if logger is not None:
            logger.warning(msg, *args, exc_info=exc_info, extra={_VERBOSE: verbose})
    except Exception:  # noqa: BLE001 - reporting a failure must never become one
        pass


def debug(verbose: bool, msg: str, *args: object) -> None:
    try:
        logger = _get(verbose)
        if logger is not None:
            logger.debug(msg, *args, extra={_VERBOSE: verbose})
    except Exception:  # noqa: BLE001 - reporting a failure must never become one
        pass
