"""What the host's observers receive for one launch, from the moment the host has it whole."""

from __future__ import annotations

from typing import Any, Optional, Tuple


class Launch(Tuple[str, ...]):
    """The arguments of one launch: a tuple of ``str``, equal to the plain tuple.

    ``cwd`` and ``pid`` are the launching process's working directory and process id,
    or ``None`` when the launch came in the plain 2.0.0 form, which does not carry them.
    """

    cwd: Optional[str]
    pid: Optional[int]
    _id: bytes  # the launch's random id (empty for the plain form): a retry is answered, not taken
    _framed: bool  # it came framed, so its client waits for an answer

    def __new__(cls, args: Tuple[str, ...] = (), cwd: Optional[str] = None,
                pid: Optional[int] = None, launch_id: bytes = b"", framed: bool = False) -> Launch:
        self = super().__new__(cls, args)
        self.cwd = cwd
        self.pid = pid
        self._id = launch_id
        self._framed = framed
        return self

    def _settle(self, fate: str) -> str:
        """Settle, once, what the launch's waiting client is told before any observer ran:
        the listener answers "queued", a host that stops takes the launch back ("retry").
        The first caller's *fate* wins and is returned to every caller: one dict call, atomic
        under the GIL, so the two threads need no lock."""
        return str(self.__dict__.setdefault("_fate", fate))

    def __reduce__(self) -> Any:
        return (type(self), (tuple(self),), dict(self.__dict__))
