"""The host's policy for each launch: a pure function of the counts and the parameters."""

from ._outcome import Reason

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a host about 1.5 MiB: the type checker alone reads it
    from typing import NamedTuple, Tuple

    class Admission(NamedTuple):
        """What the host does with one launch, before the queue has its say."""

        clients: int  # launches counted so far, this one included
        final: bool  # this launch reaches release_threshold: deliver it, then release the port
        keep: bool  # hand it to the observers; else answer ``reason`` / ``detail`` at once
        reason: str
        detail: str
else:  # the same record for the interpreter
    from collections import namedtuple

    Admission = namedtuple("Admission", "clients final keep reason detail")


def admit(clients: int, args: "Tuple[str, ...]", max_clients: int, release_threshold: int,
          deliver_empty: bool) -> "Admission":
    """The policy for a launch that arrives after *clients* others (2.0.0's parameters)."""
    clients += 1
    final = bool(release_threshold) and clients >= release_threshold
    if max_clients and clients > max_clients:
        return Admission(clients, final, False, Reason.IGNORED, "max_clients reached")
    if not args and not deliver_empty:
        return Admission(clients, final, False, Reason.IGNORED,
                         "there were no arguments to deliver")
    return Admission(clients, final, True, Reason.QUEUED, "")
