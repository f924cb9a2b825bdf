"""The wire format: pure functions over bytes, no sockets.

Two forms share the port (the README's "Protocol" section is the specification):

* the plain form of 2.0.0 for raw clients: ``[secret NUL] arg NUL arg NUL ...``, then the
  client closes its side; the host never writes to such a peer;
* the framed form our own client speaks: ``PREAMBLE`` from the client, ``BANNER`` from the
  host, then frames of ``type (1 byte) | payload length (4 bytes, big-endian) | payload``.
"""

import os
import sys

from ._outcome import Reason

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

VERSION = 3  # the newest protocol this release speaks; it also speaks 2 (see the README)

# The client's first bytes, sent alone: a 2.0.0 host reads one chunk of at most 1024 bytes and
# hands every non-empty NUL-separated piece to its observers, so it sees nothing at all from us;
# and as it has read everything we sent, its close is a clean one (not a reset), which is how
# the client tells it from a host that died.
PREAMBLE = b"\0" * 1024
# The host's answer to the preamble; only then does the client send its hello.
# Protocol 2's line, kept by protocol 3: a protocol-2 launch compares it byte for byte. A
# protocol-3 launch says so in its hello, which is longer than protocol 2's.
BANNER = b"Socket_Singleton/2\n"

HELLO = b"H"  # client -> host: client nonce [, version 3, identity]
WELCOME = b"W"  # host -> client: pid, size limit, flags, host nonce, [host proof] [, 3, identity]
LAUNCH = b"L"  # client -> host: [client proof], launch id, pid, [flags,] argc, [envc,] fields
ACK = b"A"  # host -> client: status byte, UTF-8 detail
BYE = b"B"  # client -> host, instead of a launch: UTF-8 reason (the host failed the secret check)
REPLY = b"P"  # host -> client (protocol 3): exit status (4 bytes, signed), UTF-8 text

HEADER_SIZE = 5  # type (1 byte), payload length (4 bytes, big-endian)
_WELCOME_HEAD = 9  # pid (4), limit (4), flags (1)
ID_SIZE = 16  # a launch's random id: the host delivers a retried launch once
_LAUNCH_HEAD = ID_SIZE + 8  # launch id, pid (4), argc (4)
NONCE_SIZE = 16
# No real command line has more: each argument costs at least its pointer and NUL (9 bytes) of
# the OS's 2 MiB limit. A cap keeps a message of 4 MiB of NULs from costing millions of strings.
MAX_ARGS = 256 * 1024
PROOF_SIZE = 32
FLAG_SECRET = 1
TAG_SIZE = 8  # a user tag: tells one user's host from another's without naming the user
MAX_REPLY = 1024 * 1024  # bytes of a reply's text
# Launch flags (protocol 3).
FLAG_WAIT, FLAG_TOKEN, FLAG_ENV = 1, 2, 4

# Acknowledgement statuses.
DELIVERED = b"D"  # the observers have been called for this launch
QUEUED = b"Q"  # kept in the host's queue; the observers will be called later
IGNORED = b"I"  # counted but not delivered: max_clients was reached
RETRY = b"R"  # the host is going away: try again (take over or find the next host)
REJECTED = b"E"  # refused; the detail says why

ACK_STATUSES = (DELIVERED, QUEUED, IGNORED, RETRY, REJECTED)
# The one place where outcomes meet their status bytes.
STATUS = {Reason.DELIVERED: DELIVERED, Reason.QUEUED: QUEUED, Reason.IGNORED: IGNORED,
          Reason.RETRY: RETRY, Reason.REJECTED: REJECTED}
REASON = {status: reason for reason, status in STATUS.items()}


class ProtocolError(ValueError):
    """The peer sent something this protocol does not allow."""


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return frame_header(kind, len(payload)) + payload


def frame_header(kind: bytes, size: int) -> bytes:
    return kind + size.to_bytes(4, "big")


def parse_header(data: "bytes | bytearray") -> "tuple[bytes, int]":
    return bytes(data[:1]), int.from_bytes(data[1:HEADER_SIZE], "big")


def split_frame(buf: "bytes | bytearray", limit: int) -> "tuple[bytes, bytes, int] | None":
    """Return ``(kind, payload, consumed)`` for the frame at the start of *buf*, or ``None``
    while it is incomplete. Raises ProtocolError for a frame longer than *limit*."""
    if len(buf) < HEADER_SIZE:
        return None
    kind, size = parse_header(buf)
    if size > limit:
        raise ProtocolError("frame of %d bytes exceeds the limit of %d bytes" % (size, limit))
    end = HEADER_SIZE + size
    if len(buf) < end:
        return None
    return kind, bytes(buf[HEADER_SIZE:end]), end


def secret_bytes(secret: str) -> bytes:
    """The secret as bytes: UTF-8 in every locale; a surrogate escape (U+DC80-U+DCFF, how
    Python keeps a byte it could not decode, as in ``os.environ``) stands for its byte. Raises
    UnicodeEncodeError for any other lone surrogate."""
    return secret.encode("utf-8", "surrogateescape")


def sha256(data: bytes) -> bytes:
    """The SHA-256 digest of *data*."""
    return bytes(_sha256()(data).digest())


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104) of *message* under *key*, as ``hmac.new(key, message,
    "sha256").digest()`` computes it."""
    new = _sha256()
    if len(key) > _BLOCK:
        key = new(key).digest()
    number = int.from_bytes(key.ljust(_BLOCK, b"\0"), "big")
    inner = new((number ^ _IPAD).to_bytes(_BLOCK, "big") + message).digest()
    return bytes(new((number ^ _OPAD).to_bytes(_BLOCK, "big") + inner).digest())


_BLOCK = 64  # SHA-256's block size
_IPAD = int.from_bytes(b"\x36" * _BLOCK, "big")
_OPAD = int.from_bytes(b"\x5c" * _BLOCK, "big")


_SHA256: "Any" = None  # found by _sha256()


def _sha256() -> "Any":
    """CPython's own SHA-256, without OpenSSL: ``hashlib`` loads libcrypto, which costs a launch
    about 3 ms (and ``hmac`` loads ``hashlib``). A build without it falls back to ``hashlib``.
    Found once: a failed import searches the whole path again each time."""
    global _SHA256
    if _SHA256 is None:
        for name in ("_sha2", "_sha256"):  # 3.12 and later; 3.7 to 3.11
            try:
                _SHA256 = __import__(name).sha256
                return _SHA256
            except ImportError:
                pass
        _SHA256 = __import__("hashlib").sha256
    return _SHA256


def proof(secret: str, label: bytes, first: bytes, second: bytes) -> bytes:
    """HMAC-SHA256 of the two nonces under *secret*; *label* stops a proof being reflected."""
    return hmac_sha256(secret_bytes(secret), label + first + second)


def same(a: bytes, b: bytes) -> bool:
    """Constant-time comparison (``hmac.compare_digest`` without loading ``hmac``)."""
    from _operator import _compare_digest

    return _compare_digest(a, b)


def encode_welcome(pid: int, limit: int, host_nonce: bytes, host_proof: bytes) -> bytes:
    flags = FLAG_SECRET if host_proof else 0
    head = pid.to_bytes(4, "big") + limit.to_bytes(4, "big") + bytes((flags,))
    return frame(WELCOME, head + host_nonce + host_proof)


def decode_welcome(payload: bytes) -> "tuple[int, int, bool, bytes, bytes]":
    """Return ``(pid, limit, needs_secret, host_nonce, host_proof)``."""
    head = _WELCOME_HEAD + NONCE_SIZE
    if len(payload) < head:
        raise ProtocolError("welcome too short")
    pid = int.from_bytes(payload[0:4], "big")
    limit = int.from_bytes(payload[4:8], "big")
    flags = payload[8]
    needs_secret = bool(flags & FLAG_SECRET)
    if len(payload) != head + (PROOF_SIZE if needs_secret else 0):
        raise ProtocolError("welcome has the wrong length")
    return pid, limit, needs_secret, payload[_WELCOME_HEAD:head], payload[head:]


def unsendable(args: "tuple[str, ...]") -> "str | None":
    """Why one of *args* cannot be sent in either form, or None when all can: a field cannot
    hold a NUL, and an argument must be encodable as the OS encodes file names."""
    for number, arg in enumerate(args, 1):
        if "\0" in arg:
            return "argument %d contains a NUL character, which no command line can hold" % number
        try:
            os.fsencode(arg)
        except UnicodeEncodeError as err:
            return ("argument %d cannot be encoded as this system encodes command lines "
                    "(U+%04X: %s)" % (number, ord(arg[err.start]), err.reason))
    return None


def encode_launch(client_proof: bytes, launch_id: bytes, pid: int, cwd: str,
                  args: "tuple[str, ...]") -> bytes:
    fields = [os.fsencode(cwd)] + [os.fsencode(arg) for arg in args]
    for field in fields:
        if b"\0" in field:
            raise ValueError("an argument contains a NUL character, which no command line can hold")
    body = b"".join(field + b"\0" for field in fields)
    head = launch_id + pid.to_bytes(4, "big") + len(args).to_bytes(4, "big")
    return frame(LAUNCH, client_proof + head + body)


def launch_fields_size(payload_size: int, proof_size: int, v3: bool = False) -> int:
    """The bytes of a LAUNCH payload that the host's announced limit counts: the fields
    (working directory, arguments and, in protocol 3, token and environment, with their NULs),
    not the proof, id, pid, flags or counts."""
    return payload_size - proof_size - (_LAUNCH3_HEAD if v3 else _LAUNCH_HEAD)


def launch_frame_limit(limit: int) -> int:
    """The largest LAUNCH payload a host with this announced limit accepts."""
    return limit + PROOF_SIZE + _LAUNCH3_HEAD


def decode_launch(payload: bytes, proof_size: int, max_args: int = MAX_ARGS,
                  errors: "str | None" = None) -> "tuple[bytes, bytes, int, str, tuple[str, ...]]":
    """Return ``(client_proof, launch_id, pid, cwd, args)``; *max_args* and *errors* as for
    ``decode_plain``."""
    head = proof_size + _LAUNCH_HEAD
    if len(payload) < head:
        raise ProtocolError("launch too short")
    at = proof_size + ID_SIZE
    launch_id = payload[proof_size:at]
    pid = int.from_bytes(payload[at:at + 4], "big")
    argc = int.from_bytes(payload[at + 4:head], "big")
    body = payload[head:]
    if not body.endswith(b"\0"):
        raise ProtocolError("launch fields are not NUL-terminated")
    cwd, *args = _decode_fields(body[:-1], max_args, errors)
    if len(args) != argc:
        raise ProtocolError("launch announces %d arguments but carries %d" % (argc, len(args)))
    return payload[:proof_size], launch_id, pid, cwd, tuple(args)


def encode_ack(status: bytes, detail: str = "") -> bytes:
    return frame(ACK, status + detail.encode("utf-8"))


def decode_ack(payload: bytes) -> "tuple[bytes, str]":
    status = payload[:1]
    if status not in ACK_STATUSES:
        raise ProtocolError("unknown acknowledgement %r" % status)
    return status, payload[1:].decode("utf-8", "replace")


# -- protocol 3 ------------------------------------------------------------------------------

class Identity:
    """Whose host a protocol-3 peer is: the application's id ("" for a port given by number),
    its scope (``"machine"`` or ``"user"``) and, for ``"user"``, the user's tag."""

    __slots__ = ("app_id", "scope", "tag")

    def __init__(self, app_id: str = "", scope: str = "machine", tag: bytes = b"") -> None:
        self.app_id = app_id
        self.scope = scope
        self.tag = tag if scope == "user" else b""

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Identity) and self.app_id == other.app_id
                and self.scope == other.scope and self.tag == other.tag)

    def __hash__(self) -> int:
        return hash((self.app_id, self.scope, self.tag))

    def __repr__(self) -> str:
        return "Identity(%r, %r, %r)" % (self.app_id, self.scope, self.tag)


NUMBERED = Identity()
_SCOPES = ("machine", "user")


def _encode_identity(identity: Identity) -> bytes:
    app_id = identity.app_id.encode("ascii")
    tag = identity.tag.ljust(TAG_SIZE, b"\0")[:TAG_SIZE]
    return bytes((3, len(app_id))) + app_id + bytes((_SCOPES.index(identity.scope),)) + tag


def _decode_identity(data: bytes) -> Identity:
    """*data*: the version byte (3) and what follows it, exactly."""
    if len(data) < 2 or data[0] != 3:
        raise ProtocolError("not a protocol-3 identity")
    size = data[1]
    if len(data) != 2 + size + 1 + TAG_SIZE:
        raise ProtocolError("identity has the wrong length")
    try:
        app_id = data[2:2 + size].decode("ascii")
        scope = _SCOPES[data[2 + size]]
    except (UnicodeDecodeError, IndexError):
        raise ProtocolError("malformed identity") from None
    return Identity(app_id, scope, data[3 + size:])


def encode_hello(nonce: bytes, identity: "Identity | None") -> bytes:
    """Protocol 2's hello (the nonce) when *identity* is None, else protocol 3's."""
    return frame(HELLO, nonce if identity is None else nonce + _encode_identity(identity))


def decode_hello(payload: bytes) -> "tuple[bytes, Identity | None]":
    """Return ``(nonce, identity)``; the identity is None for a protocol-2 hello."""
    if len(payload) < NONCE_SIZE:
        raise ProtocolError("expected a hello")
    if len(payload) == NONCE_SIZE:
        return payload, None
    return payload[:NONCE_SIZE], _decode_identity(payload[NONCE_SIZE:])


def encode_welcome3(pid: int, limit: int, host_nonce: bytes, host_proof: bytes,
                    identity: Identity) -> bytes:
    welcome = encode_welcome(pid, limit, host_nonce, host_proof)
    extra = _encode_identity(identity)
    return frame_header(WELCOME, len(welcome) - HEADER_SIZE + len(extra)) \
        + welcome[HEADER_SIZE:] + extra


def decode_welcome3(payload: bytes) -> "tuple[int, int, bool, bytes, bytes, Identity]":
    """Return ``decode_welcome``'s fields and the host's identity."""
    head = _WELCOME_HEAD + NONCE_SIZE
    if len(payload) < head:
        raise ProtocolError("welcome too short")
    end = head + (PROOF_SIZE if payload[8] & FLAG_SECRET else 0)
    pid, limit, needs_secret, nonce, proof = decode_welcome(payload[:end])
    return pid, limit, needs_secret, nonce, proof, _decode_identity(payload[end:])


class Extras:
    """What a protocol-3 launch carries besides its arguments: whether it waits for a reply,
    the activation token it was started with, the environment it forwards."""

    __slots__ = ("env", "token", "wait")

    def __init__(self, wait: bool = False, token: "str | None" = None,
                 env: "dict[str, str] | None" = None) -> None:
        self.wait = wait
        self.token = token
        self.env = env


def encode_launch3(client_proof: bytes, launch_id: bytes, pid: int, cwd: str,
                   args: "tuple[str, ...]", extras: Extras) -> bytes:
    fields = [cwd, *args]
    flags = FLAG_WAIT if extras.wait else 0
    if extras.token is not None:
        flags |= FLAG_TOKEN
        fields.append(extras.token)
    env = extras.env
    if env is not None:
        flags |= FLAG_ENV
        fields.extend("%s=%s" % item for item in env.items())
    encoded = [os.fsencode(field) for field in fields]
    if any(b"\0" in field for field in encoded):
        raise ValueError("a field contains a NUL character, which no command line can hold")
    head = (launch_id + pid.to_bytes(4, "big") + bytes((flags,)) + len(args).to_bytes(4, "big")
            + len(env or ()).to_bytes(4, "big"))
    return frame(LAUNCH, client_proof + head + b"".join(field + b"\0" for field in encoded))


_LAUNCH3_HEAD = ID_SIZE + 13  # launch id, pid (4), flags (1), argc (4), envc (4)


def decode_launch3(payload: bytes, proof_size: int, max_args: int = MAX_ARGS,
                   errors: "str | None" = None
                   ) -> "tuple[bytes, bytes, int, str, tuple[str, ...], Extras]":
    """Return ``(client_proof, launch_id, pid, cwd, args, extras)``."""
    head = proof_size + _LAUNCH3_HEAD
    if len(payload) < head:
        raise ProtocolError("launch too short")
    at = proof_size + ID_SIZE
    launch_id = payload[proof_size:at]
    pid = int.from_bytes(payload[at:at + 4], "big")
    flags = payload[at + 4]
    argc = int.from_bytes(payload[at + 5:at + 9], "big")
    envc = int.from_bytes(payload[at + 9:head], "big")
    body = payload[head:]
    if not body.endswith(b"\0"):
        raise ProtocolError("launch fields are not NUL-terminated")
    fields = _decode_fields(body[:-1], max_args, errors)
    token_count = 1 if flags & FLAG_TOKEN else 0
    if len(fields) != 1 + argc + token_count + envc or (envc and not flags & FLAG_ENV):
        raise ProtocolError("launch announces %d fields but carries %d"
                            % (1 + argc + token_count + envc, len(fields)))
    cwd, args = fields[0], tuple(fields[1:1 + argc])
    token = fields[1 + argc] if token_count else None
    env = None
    if flags & FLAG_ENV:
        env = {}
        for item in fields[1 + argc + token_count:]:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise ProtocolError("an environment entry is not NAME=value")
            env[name] = value
    return payload[:proof_size], launch_id, pid, cwd, args, Extras(
        bool(flags & FLAG_WAIT), token, env)


def encode_reply(status: int, text: str) -> bytes:
    return frame(REPLY, status.to_bytes(4, "big", signed=True)
                 + text.encode("utf-8", "surrogateescape"))


def decode_reply(payload: bytes) -> "tuple[int, str]":
    if len(payload) < 4:
        raise ProtocolError("reply too short")
    return (int.from_bytes(payload[:4], "big", signed=True),
            payload[4:].decode("utf-8", "surrogateescape"))


def encode_plain(args: "tuple[str, ...]", secret: "str | None" = None) -> bytes:
    """The 2.0.0 form, as a raw client writes it (used by tests and tools)."""
    fields = ([] if secret is None else [secret_bytes(secret)]) + [os.fsencode(a) for a in args]
    return b"".join(field + b"\0" for field in fields) or b"\0"


def decode_plain(data: bytes, has_secret: bool, max_args: int = MAX_ARGS,
                 errors: "str | None" = None) -> "tuple[bytes | None, tuple[str, ...]]":
    """Split a plain message into ``(secret, args)``: at most *max_args* fields, decoded as the
    OS decodes file names (*errors*: its error handler unless given); the secret field stays
    bytes (compared with ``secret_bytes``, whatever this process's locale).

    Each field ends with a NUL, the last one too: every 2.0.0 client ends its message so, and a
    message without it was cut short (a sender killed mid-send, a port scanner, noise), so it
    is refused. ``b"\\0"`` alone is how 2.0.0 sends a launch without arguments. Bytes that are
    not UTF-8 are kept losslessly (``os.fsencode`` gives them back).
    """
    if not data.endswith(b"\0"):
        raise ProtocolError("it does not end with a NUL, so it was cut short")
    body = data[:-1]
    if not has_secret:
        return None, tuple(_decode_fields(body, max_args, errors)) if body else ()
    if not body:
        return None, ()
    if body.count(b"\0") >= max_args:  # the secret is one of the fields
        raise ProtocolError("more than %d arguments" % max_args)
    given, nul, rest = body.partition(b"\0")
    return given, tuple(_decode_fields(rest, max_args, errors)) if nul else ()


def _decode_fields(body: bytes, max_fields: int, errors: "str | None") -> "list[str]":
    """Split NUL-separated fields and decode them as the OS decodes file names, in one pass
    (NUL is one byte in every encoding Python uses for file names)."""
    if body.count(b"\0") >= max_fields:
        raise ProtocolError("more than %d arguments" % max_fields)
    try:
        return body.decode(_FS_ENCODING, errors or FS_ERRORS).split("\0")
    except UnicodeError as err:  # Windows decodes strictly: bytes no command line can hold
        raise ProtocolError("undecodable argument: %s" % err) from None


_FS_ENCODING = sys.getfilesystemencoding()
FS_ERRORS = sys.getfilesystemencodeerrors()  # strict on Windows (PEP 529)


def describe_answer(data: bytes) -> str:
    """What a program that answered *data* instead of the banner seems to be."""
    if data.startswith(b"HTTP/"):
        return "it answers like an HTTP server"
    return "its answer is not a Socket_Singleton banner"


def looks_like_http(data: bytes) -> bool:
    """Whether *data* starts with an HTTP request line ("POST /x HTTP/1.1"): a web page can
    make a browser send one to any localhost port, and it is never a launch."""
    line = data[:256].split(b"\n", 1)[0]
    method, _, rest = line.partition(b" ")
    return (3 <= len(method) <= 10 and method.isalpha() and method.isupper()
            and b" HTTP/" in rest and b"\0" not in line)
