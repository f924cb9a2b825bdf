"""The application the tests launch as a real process.

Configuration comes from the environment, never from the command line, because the command
line is what a launch hands over: ``SS_TEST_CONFIG`` holds a JSON object whose ``"kwargs"``
go to ``Socket_Singleton(...)`` and whose other keys shape the app:

* ``"trace"`` (default true): register the observer at start-up; otherwise on the stdin
  command ``trace``;
* ``"observer_delay"``: seconds the observer sleeps per launch (a slow observer);
* ``"observer_block"``: the observer waits until stdin says ``unblock`` (a hung observer);
* ``"observer_raises"``: after reporting, the observer raises ValueError with this message;
* ``"return"``: the main thread returns right after start-up (the ``timeout`` cool-down case);
* ``"tuning"``: ``{"peer_deadline": 0.5, ...}`` sets the host's limits and waits through the
  library's testing hook, ``Socket_Singleton._tuning.override`` (tests shrink them instead of
  waiting);
* ``"nofile"``: the process's limit on open file descriptors (POSIX), set before start-up;
* ``"secret_env"``: the ``secret`` is this environment variable, as ``os.environ`` decodes it;
* ``"reply"``: ``[text, status]``: the observer replies to each launch so before it returns;
* ``"hold"``: the observer keeps each launch, for the stdin commands ``reply`` and
  ``await-cancelled`` (a reply made later, on the main thread);

Everything it reports is one JSON object per line on stdout:

* ``{"event": "host", "port": P, "pid": N}`` once the constructor returned as host;
* ``{"event": "launch", "args": [hex, ...], "cwd": ..., "pid": ..., "token": ..., "env": ...}``
  per observer call, each argument as the hex of its ``os.fsencode`` bytes, so tests compare
  exact bytes (``token`` and ``env``: the launch's ``activation_token`` and ``env``);
* ``{"event": "turned-away", "reason": ..., "delivered": ..., "host_pid": ..., "message": ...,
  "detail": ..., "reply_text": ..., "reply_status": ...}`` with ``strict=False`` (exit status 3);
* ``{"event": "replied"}`` or ``{"event": "reply-failed", "error": TYPE, "message": ...}``
  after ``reply``; ``{"event": "cancelled", "value": ...}`` after ``await-cancelled``;
* ``{"event": "released", "left": [[hex, ...], ...]}`` after the stdin command ``release``;
  ``left`` is what stayed in ``app.arguments`` (launches acknowledged as queued, undelivered).

stdin commands, one per line: ``release``, ``trace``, ``unblock``, ``exhaust``, ``replenish``,
``exit``; ``reply [text, status]`` (JSON) replies to the oldest held launch not replied to yet
(a reply that raises leaves it so), ``reply-again [text, status]`` to the last one replied
to; ``await-cancelled`` waits (bounded) until the oldest held launch not replied to is
cancelled, and reports whether it was; end of stdin releases and exits.
"""

import json
import os
import sys
import threading
import time

from Socket_Singleton import MultipleSingletonsError, Socket_Singleton, _tuning


def report(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def main():
    config = json.loads(os.environ.get("SS_TEST_CONFIG", "{}"))
    if config.get("nofile"):
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (config["nofile"], config["nofile"]))
    if config.get("tuning"):
        _tuning.override(**config["tuning"]).start()  # for the life of this process
    kwargs = config.get("kwargs", {})
    if config.get("secret_env"):
        kwargs["secret"] = os.environ[config["secret_env"]]
    try:
        app = Socket_Singleton(**kwargs)
    except MultipleSingletonsError as err:
        report(event="turned-away", reason=err.reason, delivered=err.delivered,
               host_pid=err.host_pid, message=str(err), detail=err.detail,
               reply_text=getattr(err, "reply_text", None),
               reply_status=getattr(err, "reply_status", None))
        return 3
    unblock = threading.Event()
    held_launches = []
    replied = []

    def observer(args):
        if config.get("hold"):
            held_launches.append(args)  # before the report: a test replies once it reads that
        report(event="launch", args=[os.fsencode(arg).hex() for arg in args],
               cwd=getattr(args, "cwd", None), pid=getattr(args, "pid", None),
               token=getattr(args, "activation_token", None), env=getattr(args, "env", None))
        if config.get("reply"):
            args.reply(*config["reply"])
        if config.get("observer_raises"):
            raise ValueError(config["observer_raises"])
        if config.get("observer_delay"):
            time.sleep(config["observer_delay"])
        if config.get("observer_block"):
            unblock.wait(60)

    if config.get("trace", True):
        app.trace(observer)
    report(event="host", port=app.port, pid=os.getpid())
    if config.get("return"):
        return 0
    held = []
    for line in sys.stdin:
        command = line.strip()
        if command == "release":
            app.release()
            report(event="released", left=[[os.fsencode(arg).hex() for arg in launch]
                                            for launch in app.arguments])
        elif command == "trace":
            app.trace(observer)
            report(event="traced")
        elif command == "unblock":
            unblock.set()
        elif command == "exhaust":
            try:
                while True:
                    held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                os.close(held.pop())  # one left: the host can take one peer at a time
            report(event="exhausted")
        elif command == "replenish":
            while held:
                os.close(held.pop())
            report(event="replenished", threads=[t.name for t in threading.enumerate()])
        elif command.startswith(("reply ", "reply-again ")):
            name, _, answer = command.partition(" ")
            if name == "reply":
                launch = next(held for held in held_launches
                              if not any(held is done for done in replied))
            else:
                launch = replied[-1]
            try:
                launch.reply(*json.loads(answer))
            except (TypeError, ValueError, RuntimeError) as err:
                report(event="reply-failed", error=type(err).__name__, message=str(err))
            else:
                if name == "reply":
                    replied.append(launch)
                report(event="replied")
        elif command == "await-cancelled":
            launch = next(held for held in held_launches
                          if not any(held is done for done in replied))
            report(event="cancelled", value=launch.wait_cancelled(30))
        elif command == "exit":
            break
    unblock.set()
    app.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
