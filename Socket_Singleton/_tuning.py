"""The host's limits and waits, in one record, and the one testing hook that changes them.

A host reads ``current`` once, when it becomes the host, and keeps those values for its life.
Tests shrink them instead of waiting::

    with _tuning.override(delivery_wait=0.05, max_pending=3):
        app = Socket_Singleton(port=0)  # this host keeps these values until release()

The README's "Limits" table documents the defaults.
"""

from __future__ import annotations

from . import _wire

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a host about 1.5 MiB: the type checker alone reads it
    from typing import Optional


class Tuning:
    """The values one host runs with. Read-only: ``replace()`` makes a changed copy."""

    __slots__ = (
        "accept_backoff",  # seconds accepting pauses when out of file descriptors
        "compat_wait",  # seconds _append_args() waits for the observers (2.0.0 called inline)
        "decode_errors",  # how undecodable argument bytes are handled (None: as the OS does)
        "delivery_wait",  # seconds an answer waits for the observers before saying "queued"
        "max_args",  # arguments in one launch (no real command line has more)
        "max_buffered",  # bytes of unfinished messages held at once, all peers together
        "max_connections",  # peers served at once; the rest wait in the listen backlog
        "max_message_size",  # bytes of one launch; larger ones are refused whole, never cut
        "max_pending",  # launches kept while no observer takes them
        "max_pending_bytes",  # and the memory their arguments take, all together
        "peer_deadline",  # seconds a peer has to send its whole message or handshake
        "recent_launches",  # launch ids remembered, so that a retried launch is delivered once
        "shutdown_grace",  # seconds release() gives answered clients to read and close
        "stop_wait",  # seconds release() waits for an observer that is running
        "trace_grace",  # seconds a new host waits for its first trace() before it answers
    )

    def __init__(self, **values: object) -> None:
        missing = set(self.__slots__) - set(values)
        if missing:
            raise TypeError("missing: %s" % ", ".join(sorted(missing)))
        self._set(values)

    def _set(self, values: dict[str, object]) -> None:
        for name, value in values.items():
            if name not in self.__slots__:
                raise TypeError("no such setting: %r" % name)
            object.__setattr__(self, name, value)

    def replace(self, **changes: object) -> Tuning:
        copy = Tuning(**{name: getattr(self, name) for name in self.__slots__})
        copy._set(changes)
        return copy

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Tuning is read-only: use replace() or override()")

    def __repr__(self) -> str:
        return "Tuning(%s)" % ", ".join("%s=%r" % (name, getattr(self, name))
                                        for name in self.__slots__)

    # For the type checker: the slots, as attributes.
    accept_backoff: float
    compat_wait: float
    decode_errors: Optional[str]
    max_args: int
    delivery_wait: float
    max_buffered: int
    max_connections: int
    max_message_size: int
    max_pending: int
    max_pending_bytes: int
    peer_deadline: float
    recent_launches: int
    shutdown_grace: float
    stop_wait: float
    trace_grace: float


DEFAULTS = Tuning(
    peer_deadline=5.0,
    delivery_wait=0.5,
    trace_grace=0.5,
    shutdown_grace=1.0,
    accept_backoff=0.1,
    stop_wait=0.5,
    compat_wait=30.0,
    decode_errors=None,
    max_args=_wire.MAX_ARGS,
    max_message_size=4 * 1024 * 1024,
    max_buffered=64 * 1024 * 1024,
    max_connections=512,
    recent_launches=4096,
    max_pending=1024,
    max_pending_bytes=64 * 1024 * 1024,
)

current = DEFAULTS  # what the next host runs with


class override:
    """The testing hook: ``with override(name=value, ...):`` hosts made inside run with those
    values (an unknown name raises ``TypeError``). Also usable as ``start()`` / ``stop()``."""

    def __init__(self, **changes: object) -> None:
        self._changes = changes
        self._saved: list[Tuning] = []

    def start(self) -> Tuning:
        global current
        changed = current.replace(**self._changes)  # first: an unknown name changes nothing
        self._saved.append(current)
        current = changed
        return current

    def stop(self) -> None:
        """Restore what start() found; overrides end in the reverse order of their start."""
        global current
        current = self._saved.pop()

    def __enter__(self) -> Tuning:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
