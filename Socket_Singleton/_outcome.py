"""How a launch ends: the vocabulary of outcomes (``Reason``), an ``Outcome``, the sentences
that explain one, and the exception a turned-away launch raises with ``strict=False``."""


class Reason:
    """Every outcome of a launch, by name: the one vocabulary of the host's answers, the
    client's outcomes and ``MultipleSingletonsError.reason``.

    Plain ``str`` values, not an ``enum.Enum``: a 16-member ``Enum`` costs a launch about half a
    millisecond to create, and on Python 3.11+ ``"%s" % member`` prints ``Reason.DELIVERED``
    instead of ``delivered``, which would change messages. The wire status of each is in
    ``_wire.STATUS`` (one place).
    """

    DELIVERED = "delivered"  # the host called its observers with our arguments
    QUEUED = "queued"  # the host holds our arguments and will deliver them
    IGNORED = "ignored"  # the host counted the launch but did not keep it (max_clients, no args)
    RETRY = "retry"  # the host is going away: try again (take over or find the next host)
    REJECTED = "rejected"  # the host refused the launch (too large, queue full, ...)
    NOT_SENT = "not-sent"  # client=False: nothing was sent
    SENT_LEGACY = "sent-legacy"  # legacy_handoff=True: sent in the 2.0.0 form, unacknowledged
    FOREIGN = "foreign"  # the port is held by a program that is not a Socket_Singleton host
    LEGACY = "legacy"  # the holder closes without answering: most likely a 2.0.0 instance
    PORT_BUSY = "port-busy"  # the port is in use but nothing listens on it
    NO_ANSWER = "no-answer"  # a host did not answer within handoff_timeout
    SECRET_MISMATCH = "secret-mismatch"  # client and host do not share the secret
    LOCAL_ERROR = "local-error"  # this process could not make or use a socket (out of resources)
    UNSENDABLE = "unsendable"  # an argument that cannot be sent (a NUL, a lone surrogate)
    NOT_RUNNING = "not-running"  # nothing listens on the port (only when not taking it: the CLI)
    HOST = "host"  # probe(): a Socket_Singleton host answered
    UNSUPPORTED = "unsupported"  # the host speaks an older protocol that lacks what was asked
    NO_REPLY = "no-reply"  # wait=True: the host took the launch, then ended before replying


class Outcome:
    """How a hand-off (or a probe) ended: a ``Reason``, a sentence, the host's pid (only from a
    host that answered as one), and *unconfirmed*: the arguments were sent but no acknowledgement
    came, so they may have been delivered."""

    __slots__ = ("detail", "host_pid", "port", "reason", "reply_status", "reply_text",
                 "unconfirmed")

    def __init__(self, reason: str, detail: str = "", host_pid: "int | None" = None,
                 unconfirmed: bool = False) -> None:
        self.reason = reason
        self.detail = detail
        self.host_pid = host_pid
        self.unconfirmed = unconfirmed
        self.reply_text: str | None = None  # the running instance's reply, if it made one
        self.reply_status: int | None = None
        self.port: int | None = None  # the port the launch ended on (the driver sets it)

    def __repr__(self) -> str:
        return "Outcome(%r, %r, %r, unconfirmed=%r)" % (self.reason, self.detail, self.host_pid,
                                                        self.unconfirmed)


# The launch needs nothing more from the user: a strict launch exits with status 0.
SUCCESS = (Reason.DELIVERED, Reason.QUEUED, Reason.IGNORED, Reason.NOT_SENT, Reason.SENT_LEGACY)

_EXPLANATIONS = {
    Reason.DELIVERED: "The arguments were delivered to it.",
    Reason.QUEUED: "The arguments were queued by it.",
    Reason.IGNORED: "It ignored the launch: {detail}.",
    Reason.NOT_SENT: "No arguments were sent (client=False).",
    Reason.SENT_LEGACY: "The arguments were sent without acknowledgement: {detail}.",
    Reason.FOREIGN: "The arguments were not sent: {detail}.",
    Reason.LEGACY: "The arguments were not sent: {detail}.",
    Reason.PORT_BUSY: "The arguments were not sent: {detail}.",
    Reason.NO_ANSWER: "The arguments were not sent: {detail}.",
    Reason.SECRET_MISMATCH: "The arguments were not sent: {detail}.",
    Reason.REJECTED: "The arguments were refused: {detail}.",
    Reason.LOCAL_ERROR: "The arguments were not sent: {detail}.",
    Reason.NOT_RUNNING: "The arguments were not sent: {detail}.",
    Reason.UNSENDABLE: "The arguments were not sent: {detail}.",
    Reason.UNSUPPORTED: "The arguments were not sent: {detail}.",
    Reason.NO_REPLY: "The arguments were sent and taken, but no reply came: {detail}.",
}
_UNCONFIRMED = ("The arguments were sent but not acknowledged (they may have been delivered): "
                "{detail}.")

# Who holds the port, as the exit line of a strict launch says it.
_HOLDERS = {
    Reason.FOREIGN: "another program holds {where}",
    Reason.LEGACY: "a program that does not speak this protocol holds {where}",
    Reason.PORT_BUSY: "{where} is in use but nothing listens on it",
    Reason.LOCAL_ERROR: "could not reach the program on {where}",
    Reason.NOT_RUNNING: "nothing listens on {where}",
    Reason.UNSENDABLE: "{where} is in use",  # nothing was asked who holds it
}
# A holder that never answered as a host (no pid) is not called an instance.
_SILENT_HOLDER = "the program on {where} did not answer"


def explain(reason: str, detail: str, unconfirmed: bool = False) -> str:
    """The sentence that says what became of the arguments, first whether they were sent."""
    return (_UNCONFIRMED if unconfirmed else _EXPLANATIONS[reason]).format(detail=detail)


def exit_line(outcome: Outcome, where: str) -> str:
    """What a strict launch that failed prints as it exits."""
    holder = _HOLDERS.get(outcome.reason)
    if holder is None:
        holder = ("another instance holds {where}" if outcome.host_pid is not None
                  else _SILENT_HOLDER)
    return "Socket_Singleton: %s. %s" % (holder.format(where=where),
                                         explain(outcome.reason, outcome.detail,
                                                 outcome.unconfirmed))


class MultipleSingletonsError(Exception):
    """Another instance holds the port.

    Attributes: ``address``, ``port``, ``reason`` (one of the module's reason strings),
    ``delivered`` (whether the host accepted the arguments), ``detail`` (a sentence for
    humans), ``host_pid`` (the host's process id when it told us, else ``None``) and
    ``unconfirmed`` (the arguments were sent but not acknowledged: they may have been delivered);
    ``reply_text`` and ``reply_status``: the running instance's reply (``Launch.reply``), or
    ``None`` when it made none.
    """

    def __init__(
        self,
        address: str,
        port: int,
        reason: str = Reason.NOT_SENT,
        detail: str = "",
        host_pid: "int | None" = None,
        unconfirmed: bool = False,
        reply_text: "str | None" = None,
        reply_status: "int | None" = None,
    ) -> None:
        self.address = address
        self.reply_text = reply_text
        self.reply_status = reply_status
        self.port = port
        self.reason = reason
        self.detail = detail
        self.host_pid = host_pid
        self.unconfirmed = unconfirmed
        self.delivered = reason in (Reason.DELIVERED, Reason.QUEUED)
        super().__init__(
            "\nApplication is already bound & listening @ %s on port %d. Multiple instances "
            "are disallowed in the current context. %s"
            % (address, port, explain(reason, detail, unconfirmed))
        )

    def __reduce__(self) -> "tuple[object, ...]":
        return (type(self), (self.address, self.port, self.reason, self.detail, self.host_pid,
                             self.unconfirmed, self.reply_text, self.reply_status))
