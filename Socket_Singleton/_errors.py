"""The exception a turned-away launch raises with ``strict=False``."""

# Values of MultipleSingletonsError.reason.
DELIVERED = "delivered"  # the host called its observers with our arguments
QUEUED = "queued"  # the host holds our arguments and will deliver them
IGNORED = "ignored"  # the host counted the launch but max_clients made it drop the arguments
NOT_SENT = "not-sent"  # client=False: nothing was sent
FOREIGN = "foreign"  # the port is held by a program that is not a Socket_Singleton host
NO_ANSWER = "no-answer"  # a host did not answer within handoff_timeout
SECRET_MISMATCH = "secret-mismatch"  # client and host do not share the secret
REJECTED = "rejected"  # the host refused the launch (too large, queue full, ...)
NOT_RUNNING = "not-running"  # nothing listens on the port (only when not taking it: the CLI)

_EXPLANATIONS = {
    DELIVERED: "The arguments were delivered to it.",
    QUEUED: "The arguments were queued by it.",
    IGNORED: "It ignored the arguments (max_clients reached).",
    NOT_SENT: "No arguments were sent (client=False).",
    FOREIGN: "The arguments were not sent: {detail}.",
    NO_ANSWER: "No acknowledgement: {detail}.",
    SECRET_MISMATCH: "The arguments were not sent: {detail}.",
    REJECTED: "The arguments were not delivered: {detail}.",
    NOT_RUNNING: "The arguments were not sent: {detail}.",
}


def explain(reason: str, detail: str) -> str:
    """The sentence that says what became of the arguments."""
    return _EXPLANATIONS[reason].format(detail=detail)


class MultipleSingletonsError(Exception):
    """Another instance holds the port.

    Attributes: ``address``, ``port``, ``reason`` (one of the module's reason strings),
    ``delivered`` (whether the host accepted the arguments), ``detail`` (a sentence for
    humans) and ``host_pid`` (the host's process id when it told us, else ``None``).
    """

    def __init__(
        self,
        address: str,
        port: int,
        reason: str = NOT_SENT,
        detail: str = "",
        host_pid: "int | None" = None,
    ) -> None:
        self.address = address
        self.port = port
        self.reason = reason
        self.detail = detail
        self.host_pid = host_pid
        self.delivered = reason in (DELIVERED, QUEUED)
        super().__init__(
            "\nApplication is already bound & listening @ %s on port %d. Multiple instances "
            "are disallowed in the current context. %s"
            % (address, port, explain(reason, detail))
        )

    def __reduce__(self) -> "tuple[object, ...]":
        return (type(self), (self.address, self.port, self.reason, self.detail, self.host_pid))
