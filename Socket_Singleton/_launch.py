"""What the host's observers receive for one launch, from the moment the host has it whole."""

from __future__ import annotations

import threading

from . import _wire

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a host about 1.5 MiB: the type checker alone reads it
    from typing import Any, Callable, Dict, Optional, Tuple

    _Args = Tuple[str, ...]
else:
    _Args = tuple


class Launch(_Args):
    """The arguments of one launch: a tuple of ``str``, equal to the plain tuple.

    ``cwd`` and ``pid`` are the launching process's working directory and process id,
    or ``None`` when the launch came in the plain 2.0.0 form, which does not carry them.
    ``activation_token`` is the launching process's ``XDG_ACTIVATION_TOKEN`` or
    ``DESKTOP_STARTUP_ID`` (``None`` when it had neither, or spoke an older protocol); ``env`` is
    the environment it forwarded (``forward_env``), else ``None``.
    """

    cwd: Optional[str]
    pid: Optional[int]
    activation_token: Optional[str]
    env: Optional[Dict[str, str]]
    _id: bytes  # the launch's random id (empty for the plain form): a retry is answered, not taken
    _framed: bool  # it came framed, so its client waits for an answer
    _wait: bool  # its client waits for a reply (protocol 3, wait=True)
    _can_reply: bool  # it spoke protocol 3: a reply made before its acknowledgement reaches it
    _on_reply: Optional[Callable[[Launch], None]]  # tells the listener a reply was made

    def __new__(cls, args: Tuple[str, ...] = (), cwd: Optional[str] = None,
                pid: Optional[int] = None, launch_id: bytes = b"", framed: bool = False,
                extras: Optional[_wire.Extras] = None) -> Launch:
        self = super().__new__(cls, args)
        self.cwd = cwd
        self.pid = pid
        self.activation_token = extras.token if extras is not None else None
        self.env = extras.env if extras is not None else None
        self._id = launch_id
        self._framed = framed
        self._wait = extras is not None and extras.wait
        self._can_reply = extras is not None
        self._on_reply = None
        return self

    def reply(self, text: str = "", status: int = 0) -> None:
        """Answer this launch, from any thread, at most once (a second call raises
        ``RuntimeError``): the launching process writes *text* to its stdout and exits with
        *status* (with ``strict=False``: ``MultipleSingletonsError.reply_text`` and
        ``reply_status``). A launch made with ``wait=True`` waits for it; any other gets it only
        if it is made before the launch's acknowledgement leaves (by the observer itself). A
        launch that speaks an older protocol, or the 2.0.0 form, never sees it."""
        if not isinstance(text, str):
            raise TypeError("text must be a str, not %s" % type(text).__name__)
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError("status must be an int, not %s" % type(status).__name__)
        if not -2 ** 31 <= status < 2 ** 31:
            raise ValueError("status must fit in 32 bits")
        if len(text.encode("utf-8", "surrogateescape")) > _wire.MAX_REPLY:
            raise ValueError("the reply's text takes more than %d bytes" % _wire.MAX_REPLY)
        answer = (text, status)
        if self.__dict__.setdefault("_reply", answer) is not answer:  # atomic: one wins
            raise RuntimeError("this launch has been replied to already")
        on_reply = self._on_reply
        if on_reply is not None:
            on_reply(self)
        self._wake_waiters()

    @property
    def cancelled(self) -> bool:
        """Whether the launching process stopped waiting for its reply (Ctrl+C, killed) before
        one was made; only a launch made with ``wait=True`` waits."""
        return bool(self.__dict__.get("_cancelled", False))

    def wait_cancelled(self, timeout: Optional[float] = None) -> bool:
        """Block until this launch no longer waits for its reply, or *timeout* seconds pass;
        return ``cancelled``. The wait ends when the launching process stops waiting
        (``True``), when a reply is made, or when its connection ends otherwise (the host
        releases the port). A launch that does not wait for a reply returns at once."""
        if self._wait and not self._settled_wait():
            # Created by whichever side comes first, atomically; the listener's side never
            # waits on it. Each side sets its flag before looking for the other's event.
            event = self.__dict__.setdefault("_waiters", threading.Event())
            if not self._settled_wait():
                event.wait(timeout)
        return self.cancelled

    def _settled_wait(self) -> bool:
        state = self.__dict__
        return "_reply" in state or "_cancelled" in state or "_closed" in state

    def _wake_waiters(self) -> None:
        event = self.__dict__.get("_waiters")
        if event is not None:
            event.set()

    def _cancel(self) -> None:
        self.__dict__["_cancelled"] = True
        self._wake_waiters()

    def _close(self) -> None:
        """Its connection ended: a reply made from now on goes nowhere."""
        self._on_reply = None  # nothing keeps the listener alive through the launch
        self.__dict__["_closed"] = True
        self._wake_waiters()

    def _reply_made(self) -> Optional[Tuple[str, int]]:
        reply = self.__dict__.get("_reply")
        return None if reply is None else (str(reply[0]), int(reply[1]))

    def _settle(self, fate: str) -> str:
        """Settle, once, what the launch's waiting client is told before any observer ran:
        the listener answers "queued", a host that stops takes the launch back ("retry").
        The first caller's *fate* wins and is returned to every caller: one dict call, atomic
        under the GIL, so the two threads need no lock."""
        return str(self.__dict__.setdefault("_fate", fate))

    def __reduce__(self) -> Any:
        state = dict(self.__dict__)
        state["_on_reply"] = None  # a method of the listener: not part of the launch
        state.pop("_waiters", None)  # a lock: only this process's threads wait on it
        state["_closed"] = True  # a copy has no connection: its reply goes nowhere, and its
        # wait_cancelled() must not wait for what only the original can learn
        return (type(self), (tuple(self),), state)
