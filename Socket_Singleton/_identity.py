"""An application's identity: its id, the ports derived from it, the user tag and the per-user
key. Only a launch that names an ``app_id`` loads this module; it loads ctypes only on
Windows.

Everything here is pure and stable: the same id, scope and user give the same ports on every
machine, platform and Python version, for as long as the version string ``socket-singleton/1``
is the one hashed (changing the derivation means a new version string, and a major release).
"""

import os
import sys

from . import _wire

VERSION = b"socket-singleton/1"

APP_ID_MAX = 128
_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_ID_CHARACTERS = _LETTERS | frozenset("0123456789.-_")
SCOPES = ("machine", "user")

# Derived ports come from LOW..HIGH, minus AVOID. Below 10000 lie most services' and development
# servers' ports (3000, 5000, 5432, 6379, 8000, 8080, 8443, 8888, ...); from 30000 on lie
# Kubernetes' NodePorts (30000-32767) and then every system's ephemeral range (Linux 32768-60999,
# Windows and macOS 49152-65535). AVOID holds the well-known ports left inside (sorted; frozen
# with VERSION: adding one would move other applications' ports).
LOW, HIGH = 10000, 29999
AVOID = (10000, 11211, 11434, 15672, 16686, 17500, 18080, 19000, 19999, 20000, 22000, 24800,
         25565, 26257, 27017, 27018, 27019, 28015, 28017)
SIZE = HIGH - LOW + 1 - len(AVOID)  # 19981 ports

CANDIDATES = 8  # how many ports a launch may walk before it gives up
TAG_SIZE = 8
KEY_SIZE = 32  # random bytes in a key file, stored as 64 hex digits and a newline
KEY_FILE = "key"


class UserKeyError(OSError):
    """The per-user key cannot be created or read: *path* is the file or directory, *problem*
    says what is wrong with it."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__("cannot use the per-user key %s: %s" % (path, problem))
        self.path = path
        self.problem = problem


def validate_app_id(app_id: object) -> str:
    """Return *app_id* if it is a valid application id, else raise.

    An id is 1 to 128 characters: ASCII letters, digits, ``.``, ``-`` and ``_``, starting with
    a letter, e.g. ``"org.example.Editor"``. Ids are case-sensitive (as GApplication's and
    D-Bus's names are): ``"org.example.editor"`` is another application.

    :raises TypeError: *app_id* is not a ``str``.
    :raises ValueError: it is empty, too long, or holds a character outside that set.
    """
    if not isinstance(app_id, str):
        raise TypeError("app_id must be a str, not %s" % type(app_id).__name__)
    if not app_id:
        raise ValueError("app_id must not be empty")
    if len(app_id) > APP_ID_MAX:
        raise ValueError("app_id must be at most %d characters, not %d"
                         % (APP_ID_MAX, len(app_id)))
    for index, char in enumerate(app_id):
        if char not in _ID_CHARACTERS:
            raise ValueError("app_id may hold only ASCII letters, digits, '.', '-' and '_': "
                             "%r at index %d is not allowed" % (char, index))
    if app_id[0] not in _LETTERS:
        raise ValueError("app_id must start with an ASCII letter, not %r" % app_id[0])
    return app_id


def user_identity() -> str:
    """Who this process runs as, as the port derivation and the user tag see it: on POSIX
    ``"uid:"`` and the effective user id (``"uid:1000"``); on Windows ``"sid:"`` and the user's
    security identifier (``"sid:S-1-5-21-...-1001"``), or, should the SID be out of reach,
    ``"name:"`` and ``USERDOMAIN\\USERNAME``."""
    if sys.platform == "win32":
        try:
            return "sid:" + _windows_sid()
        except OSError:
            return "name:%s\\%s" % (os.environ.get("USERDOMAIN", ""),
                                    os.environ.get("USERNAME", ""))
    return "uid:%d" % os.geteuid()


if sys.platform == "win32":
    def _windows_sid() -> str:
        """The string SID of the user this process's token belongs to."""
        import ctypes  # Windows only, and only for a user-scoped identity
        from ctypes import wintypes

        advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.GetCurrentProcess.restype = wintypes.HANDLE
        advapi32.OpenProcessToken.argtypes = (wintypes.HANDLE, wintypes.DWORD,
                                              ctypes.POINTER(wintypes.HANDLE))
        advapi32.GetTokenInformation.argtypes = (wintypes.HANDLE, ctypes.c_int, ctypes.c_void_p,
                                                 wintypes.DWORD, ctypes.POINTER(wintypes.DWORD))
        advapi32.ConvertSidToStringSidW.argtypes = (ctypes.c_void_p,
                                                    ctypes.POINTER(wintypes.LPWSTR))
        kernel32.LocalFree.argtypes = (ctypes.c_void_p,)
        kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
        token_query, token_user = 0x0008, 1
        token = wintypes.HANDLE()
        if not advapi32.OpenProcessToken(kernel32.GetCurrentProcess(), token_query,
                                         ctypes.byref(token)):
            raise ctypes.WinError(ctypes.get_last_error())
        try:
            size = wintypes.DWORD()
            advapi32.GetTokenInformation(token, token_user, None, 0, ctypes.byref(size))
            buffer = ctypes.create_string_buffer(size.value)
            if not advapi32.GetTokenInformation(token, token_user, buffer, size,
                                                ctypes.byref(size)):
                raise ctypes.WinError(ctypes.get_last_error())
            sid = ctypes.cast(buffer, ctypes.POINTER(ctypes.c_void_p))[0]  # TOKEN_USER.User.Sid
            text = wintypes.LPWSTR()
            if not advapi32.ConvertSidToStringSidW(sid, ctypes.byref(text)):
                raise ctypes.WinError(ctypes.get_last_error())
            try:
                return str(text.value)
            finally:
                kernel32.LocalFree(text)
        finally:
            kernel32.CloseHandle(token)


def _check_scope(scope: object, user: object) -> str:
    if not isinstance(scope, str):
        raise TypeError("scope must be a str, not %s" % type(scope).__name__)
    if scope not in SCOPES:
        raise ValueError("scope must be 'machine' or 'user', not %r" % scope)
    if user is not None:
        if not isinstance(user, str):
            raise TypeError("user must be a str or None, not %s" % type(user).__name__)
        if scope != "user":
            raise ValueError("user is only used with scope='user'")
        return user
    return user_identity() if scope == "user" else ""


def _digest(*fields: bytes) -> bytes:
    """SHA-256 over VERSION and *fields*, each preceded by its length (4 bytes, big-endian),
    so that no two lists of fields hash the same bytes."""
    data = b"".join(len(field).to_bytes(4, "big") + field for field in (VERSION, *fields))
    return _wire.sha256(data)


def _nth_port(index: int) -> int:
    """The *index*-th port (from 0) of LOW..HIGH without the ports in AVOID."""
    port = LOW + index
    for avoided in AVOID:
        if avoided > port:
            break
        port += 1
    return port


def _port(app_id: str, scope: str, user: str, index: int) -> int:
    digest = _digest(b"port", app_id.encode("ascii"), scope.encode("ascii"),
                     user.encode("utf-8", "surrogatepass"), index.to_bytes(4, "big"))
    return _nth_port(int.from_bytes(digest[:8], "big") % SIZE)


def candidates(app_id: str, scope: str = "machine", user: "str | None" = None,
               count: int = CANDIDATES) -> "list[int]":
    """The ports an application tries, in order: *count* distinct ports (1 to 64), the first
    of which is ``port_for(app_id, scope, user)``.

    Port *i* of the hash sequence is ``SHA-256(fields)``: the fields are ``socket-singleton/1``,
    ``port``, the id (ASCII), the scope (``machine`` or ``user``), the user (``""`` for the
    machine scope, else ``user_identity()``'s string in UTF-8) and *i* (4 bytes, big-endian),
    each preceded by its length (4 bytes, big-endian); the digest's first 8 bytes, as a
    big-endian number, modulo the 19,981 ports of 10000-29999 that are not in ``AVOID``, pick
    the port. The candidates are that sequence for i = 0, 1, 2, ... without repeats.

    :param user: with ``scope="user"``, the user whose ports these are, as
        :func:`user_identity` names them; ``None`` (the default) is this process's user.
    """
    app_id = validate_app_id(app_id)
    who = _check_scope(scope, user)
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError("count must be an int, not %s" % type(count).__name__)
    if not 1 <= count <= 64:
        raise ValueError("count must be between 1 and 64 (inclusive)")
    ports: list[int] = []
    index = 0
    while len(ports) < count:
        port = _port(app_id, scope, who, index)
        if port not in ports:
            ports.append(port)
        index += 1
    return ports


def port_for(app_id: str, scope: str = "machine", user: "str | None" = None) -> int:
    """The port of application *app_id* in *scope*: ``"machine"`` (one instance for the
    machine, the default) or ``"user"`` (one per user; *user* as in :func:`candidates`). A
    port between 10000 and 29999; see :func:`candidates` for the derivation."""
    return candidates(app_id, scope, user, 1)[0]


def user_tag(app_id: str, user: "str | None" = None) -> bytes:
    """8 bytes a host of *app_id* announces so that a launch can tell its own user's host from
    another user's: the first 8 bytes of ``SHA-256(fields)`` over ``socket-singleton/1``,
    ``user-tag``, the id and the user (*user*, or this process's ``user_identity()``), encoded
    as for the ports. It names nobody outright, but it is no secret and proves nothing: anyone
    who guesses the user (user ids are few) can compute it. The per-user key authenticates."""
    app_id = validate_app_id(app_id)
    who = _check_scope("user", user)
    return _digest(b"user-tag", app_id.encode("ascii"),
                   who.encode("utf-8", "surrogatepass"))[:TAG_SIZE]


# -- the per-user key -------------------------------------------------------------------------

def key_directory() -> str:
    """Where this user's key file lives: on Windows ``%LOCALAPPDATA%\\socket-singleton``; on
    POSIX ``$XDG_CONFIG_HOME/socket-singleton`` when that variable holds an absolute path, else
    ``~/.config/socket-singleton``."""
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(
            os.path.expanduser("~"), "AppData", "Local")
    else:
        base = os.environ.get("XDG_CONFIG_HOME", "")
        if not os.path.isabs(base):
            base = os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "socket-singleton")


def user_key(app_id: str) -> str:
    """The key with which *app_id*'s processes of this user prove themselves to each other: 64
    hex digits, HMAC-SHA256 of this user's key file (32 random bytes, created on first use)
    over the id. Usable as a ``secret``; another application's key tells nothing of it.

    :raises UserKeyError: the key directory or file cannot be created or read, or is not safe
        (POSIX: the directory is not this user's or others may write to it; the file is not
        this user's, others may read it, or it holds no key).
    """
    app_id = validate_app_id(app_id)
    master = bytes.fromhex(_master_key(key_directory()))
    return _wire.hmac_sha256(master, b"socket-singleton/1 app-key " + app_id.encode("ascii")).hex()


def _master_key(directory: str) -> str:
    _make_directory(directory)
    path = os.path.join(directory, KEY_FILE)
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    _create_key(directory, path)
    return _read_key(path)  # ours, or the key of a process that created it first


def _make_directory(directory: str) -> None:
    try:
        os.makedirs(directory, 0o700, exist_ok=True)
    except OSError as err:
        raise UserKeyError(directory, "cannot create the directory (%s); set %s to a "
                           "directory of yours" % (err.strerror or err,
                                                   "LOCALAPPDATA" if os.name == "nt"
                                                   else "XDG_CONFIG_HOME")) from None
    if os.name != "nt":  # on Windows the directory's ACL, inherited from the profile, is the user's
        import stat

        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode):
            raise UserKeyError(directory, "not a directory (a symbolic link?)")
        if info.st_uid != os.geteuid():
            raise UserKeyError(directory, "the directory belongs to user id %d, not to this "
                               "user (%d)" % (info.st_uid, os.geteuid()))
        if info.st_mode & 0o022:
            raise UserKeyError(directory, "others may write to the directory (mode %03o); "
                               "chmod go-w it" % stat.S_IMODE(info.st_mode))


def _read_key(path: str) -> str:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = _open_key(path, flags)
    except FileNotFoundError:
        raise
    except OSError as err:
        import errno

        if err.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a link (BSDs: EMLINK)
            raise UserKeyError(path, "not a regular file (a symbolic link?)") from None
        raise UserKeyError(path, "cannot read the file (%s)" % (err.strerror or err)) from None
    try:
        if os.name != "nt":
            import stat

            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise UserKeyError(path, "not a regular file")
            if info.st_uid != os.geteuid():
                raise UserKeyError(path, "the file belongs to user id %d, not to this user "
                                   "(%d)" % (info.st_uid, os.geteuid()))
            if info.st_mode & 0o077:
                raise UserKeyError(path, "others may read or write the file (mode %03o); "
                                   "delete it, and a new key is made"
                                   % stat.S_IMODE(info.st_mode))
        data = os.read(fd, 2 * KEY_SIZE + 2)
    finally:
        os.close(fd)
    text = data.decode("ascii", "replace").strip()
    if len(text) != 2 * KEY_SIZE or any(char not in "0123456789abcdef" for char in text):
        raise UserKeyError(path, "the file holds no key (64 hex digits); delete it, and a new "
                           "key is made")
    return text


def _open_key(path: str, flags: int) -> int:
    """``os.open``; on Windows tried again for up to about 0.6 s while the file is busy: a key
    that another launch is renaming into place at this moment, or that an antivirus is
    scanning, cannot be opened for an instant (a sharing violation, PermissionError)."""
    delay = 0.005
    while True:
        try:
            return os.open(path, flags)
        except PermissionError:
            if os.name != "nt" or delay > 0.5:
                raise
        import time

        time.sleep(delay)
        delay *= 2


def _create_key(directory: str, path: str) -> None:
    """Write a new key to a file of our own, then give it the key file's name unless another
    process did so first: the name only ever holds a whole key."""
    temporary = os.path.join(directory, "%s.%d.%s.tmp" % (KEY_FILE, os.getpid(),
                                                          os.urandom(8).hex()))
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_BINARY", 0))
    try:
        fd = os.open(temporary, flags, 0o600)
    except OSError as err:
        raise UserKeyError(directory, "cannot create a file in the directory (%s)"
                           % (err.strerror or err)) from None
    try:
        try:
            os.write(fd, os.urandom(KEY_SIZE).hex().encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            _publish(temporary, path)
        except FileExistsError:
            pass  # another process was first: its key is the key
        except OSError as err:
            raise UserKeyError(path, "cannot create the file (%s)"
                               % (err.strerror or err)) from None
    finally:
        try:
            os.unlink(temporary)
        except OSError:
            pass


def _publish(source: str, target: str) -> None:
    """Give *source*'s file the name *target* too, unless *target* exists (FileExistsError)."""
    if os.name == "nt":
        os.rename(source, target)  # Windows' rename never replaces a file
    else:
        os.link(source, target)  # POSIX's rename would replace one


def resolve(app_id: str, scope: str,
            secret: "str | None") -> "tuple[_wire.Identity, str | None]":
    """The identity a host of *app_id* announces in *scope*, and the secret in effect: in scope
    ``"user"``, this user's key for the application (:func:`user_key`), followed by a newline
    and *secret* when one is given; in scope ``"machine"``, *secret*.

    :raises UserKeyError: as :func:`user_key`.
    """
    if scope == "machine":
        return _wire.Identity(app_id, scope), secret
    key = user_key(app_id)
    return (_wire.Identity(app_id, scope, user_tag(app_id)),
            key if secret is None else key + "\n" + secret)
