"""The command line: ``python -m Socket_Singleton`` or ``socket-singleton``."""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__, _client, _net, _singleton, _wire
from ._outcome import Reason

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn, Optional, Sequence

PROG = "socket-singleton"

OK, USAGE, NOT_RUNNING, FOREIGN, NO_ANSWER, REFUSED, LOCAL = 0, 2, 3, 4, 5, 6, 7
UNSUPPORTED, NO_REPLY, INTERRUPTED = 8, 9, 130
EXIT_CODES = {
    Reason.HOST: OK,
    Reason.DELIVERED: OK,
    Reason.QUEUED: OK,
    Reason.NOT_RUNNING: NOT_RUNNING,
    Reason.PORT_BUSY: NOT_RUNNING,
    Reason.FOREIGN: FOREIGN,
    Reason.LEGACY: FOREIGN,
    Reason.LOCAL_ERROR: LOCAL,
    Reason.NO_ANSWER: NO_ANSWER,
    Reason.SECRET_MISMATCH: REFUSED,
    Reason.IGNORED: OK,  # as a launch: nothing for the user to do (max_clients, no arguments)
    Reason.REJECTED: REFUSED,
    Reason.UNSUPPORTED: UNSUPPORTED,
    Reason.NO_REPLY: NO_REPLY,
}

EPILOG = """\
examples:
  %(prog)s status --app-id org.example.Editor
  %(prog)s send --app-id org.example.Editor -- notes.txt --new-window
  %(prog)s send --app-id org.example.Editor --wait -- notes.txt   # until it replies
  APP_SECRET=s3cret %(prog)s send --port 24621 --secret-env APP_SECRET -- notes.txt
  %(prog)s status --port 24621   # an application numbered by its port

exit codes:
  0  status: a Socket_Singleton host answered; send: the host took the arguments, or
     ignored them as a launch's would be (max_clients reached, no arguments)
  2  the command line is wrong
  3  nothing listens on the port (it may be free, or in use by a connection)
  4  a program that is not a Socket_Singleton host holds the port (2.0.0, say)
  5  no answer within --timeout
  6  refused: secret mismatch, too large, or the host's queue is full
  7  this process could not make a connection (out of descriptors or memory)
  8  send --wait: the running instance is too old to reply (protocol 2); nothing was sent
  9  send --wait: the instance took the arguments, then ended before it replied
  130  interrupted (Ctrl+C), e.g. while send --wait waits

When the application replies (with --wait, or at once), send prints the reply's text on
stdout and exits with the reply's status instead, whatever it is.
""" % {"prog": PROG}  # spelled out: in a subcommand's help %(prog)s would be "... status"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, "%s: error: %s (see --help)\n" % (PROG, message))


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError("must be a number from 1 to 65535, not %r" % text)
    return port


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--port", type=_port,
                        help="the application's port (with --app-id: pins that port instead "
                        "of the derived ones)")
    common.add_argument("--app-id", help="the application's id: its ports are derived from it")
    common.add_argument("--scope", choices=("user", "machine"),
                        help="with --app-id: the application's scope (default: user)")
    common.add_argument("--address", default="127.0.0.1",
                        help="the address the application binds (default: %(default)s)")
    common.add_argument("--secret-env", metavar="NAME",
                        help="read the application's secret from this environment variable")
    common.add_argument("--timeout", type=float, default=2.0,
                        help="seconds to wait for the host (default: %(default)s)")

    parser = _Parser(prog=PROG, description="Talk to a running Socket_Singleton application.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    commands.add_parser("status", parents=[common], epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        help="is a Socket_Singleton host listening on the port? (its pid)")
    send = commands.add_parser("send", parents=[common], epilog=EPILOG,
                               formatter_class=argparse.RawDescriptionHelpFormatter,
                               help="hand arguments to the running host, as a launch would")
    send.add_argument("--wait", action="store_true",
                      help="wait, as long as it takes (--timeout bounds only the hand-off), "
                           "for the application's reply; print it and exit with its status")
    send.add_argument("--forward-env", action="store_true",
                      help="hand the application this command's whole environment too")
    send.add_argument("args", nargs="*", metavar="ARG",
                      help="the arguments to hand over (put them after --)")
    return parser


_USAGE_PARSER = _Parser(prog=PROG)  # says a usage error found after parsing


def main(argv: Optional[Sequence[str]] = None) -> int:
    options = _parser().parse_args(argv)
    secret = None
    if options.secret_env is not None:
        secret = os.environ.get(options.secret_env)
        if secret is None:
            _fail("environment variable %s is not set" % options.secret_env)
        try:
            _wire.secret_bytes(secret)
        except UnicodeEncodeError:
            _fail("environment variable %s holds a lone surrogate, which cannot be a secret"
                  % options.secret_env)
    if not 0 < options.timeout < 24 * 3600:  # also refuses nan
        _fail("--timeout must be a number of seconds greater than 0")
    try:
        return _run(options, secret)
    except KeyboardInterrupt:  # Ctrl+C, most likely while waiting for a reply
        return INTERRUPTED


def _run(options: argparse.Namespace, secret: Optional[str]) -> int:
    identity = _wire.NUMBERED
    ports: tuple[int, ...] = ()
    port = options.port
    named = ""
    if options.app_id is None:
        if port is None:
            _USAGE_PARSER.error("one of --port and --app-id is required")
        if options.scope is not None:
            _USAGE_PARSER.error("--scope is only used with --app-id")
    else:
        from . import _identity

        scope = options.scope or "user"
        try:
            app_id = _identity.validate_app_id(options.app_id)
            if port is None:
                ports = tuple(_identity.candidates(app_id, scope))
                port = ports[0]
            identity, secret = _identity.resolve(app_id, scope, secret)
        except ValueError as err:
            _USAGE_PARSER.error("--app-id: %s" % err)
        except OSError as err:  # the user's key
            _fail(str(err))
        named = "%s (%s scope) on " % (app_id, scope)
    if options.command == "status":
        outcome = _client.probe(options.address, port, secret, options.timeout, identity, ports)
    else:
        extras = _wire.Extras(options.wait, _client.activation_token(),
                              _singleton._environment(options.forward_env))
        claimed = _client.claim(options.address, port, True, tuple(options.args),
                                secret, options.timeout, take=False, extras=extras,
                                identity=identity, ports=ports)
        assert isinstance(claimed, _client.Outcome)  # take=False never binds
        outcome = claimed
    if outcome.host_pid is not None and outcome.port is not None:
        port = outcome.port  # where its host answered
    where = named + _net.where(options.address, port)
    if options.command == "status":
        if outcome.reason == Reason.HOST:
            print("a Socket_Singleton host listens on %s (pid %s)" % (where, outcome.host_pid))
    elif outcome.reply_status is not None:  # the application answered: as a launch would
        sys.stdout.write(outcome.reply_text or "")
        sys.stdout.flush()
        return outcome.reply_status
    elif outcome.reason in (Reason.DELIVERED, Reason.QUEUED):
        print("%s to the host on %s (pid %s)" % (outcome.reason, where, outcome.host_pid))
    elif outcome.reason == Reason.IGNORED:
        print("ignored by the host on %s (pid %s): %s"
              % (where, outcome.host_pid, outcome.detail))
    code = EXIT_CODES.get(outcome.reason, REFUSED)
    if code != OK:
        sys.stderr.write("%s: %s: %s\n" % (PROG, where, outcome.detail or outcome.reason))
    return code


def _fail(message: str) -> NoReturn:
    sys.stderr.write("%s: error: %s\n" % (PROG, message))
    raise SystemExit(USAGE)
