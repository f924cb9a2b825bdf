"""A deterministic simulation of the hand-off, built on the protocol's I/O-free machines.

Launches (``_handoff.Handoff``) and a succession of hosts (``_connection.HostProtocol`` with one
``HostConnection`` per peer) run over a simulated network and clock, with no socket, thread or
real time. A scheduler picks, at each step, one of the things that may happen next: a launch
connects, sends, reads (an answer, an end of file, a reset, a timeout once its deadline has
passed) or wakes from its pause; a host reads one message of one connection, delivers the head
of its queue, answers "queued" when its delivery wait is over, closes its port at the end of
the threshold's wait; and, within each configuration's budget, a host releases the port or
crashes at any step. Messages of different connections are delivered in any order; a crash or a
dropped peer resets its connections, losing what was in flight.

Small configurations are explored exhaustively (every interleaving: a depth-first search over
the states, each state explored once up to the launches' names, see ``canonical``; a schedule
is a complete path, counted over the state graph); larger ones by seeded random schedules.
SOCKET_SINGLETON_SIMULATION=full sets the larger budget (three launches explored whole, more
random schedules). Every schedule is checked for:

* never two hosts at once: a host takes a launch only while every other host has let go;
* every launch ends as the host, or delivered exactly once, or reported not delivered. The one
  documented exception: a host that delivers a launch and crashes before its answer leaves
  can make the launch's retry reach the next host, which delivers it again (only that case);
* a launch that would exit 0 was delivered (reason ``delivered``) or queued by a host
  (``queued``) when its answer arrived;
* no argument or secret byte is sent to a host that did not prove it knows the secret;
* nothing is taken or delivered by a host after its release() returned.

Launches and hosts of two identities (two applications, or one application for two users)
whose candidate ports collide run in the same world; see "identities that collide" below for
what is checked there besides.
"""

import errno
import hashlib
import itertools
import os
import pickle
import random
import re
import unittest

from Socket_Singleton import _connection, _handoff, _outcome, _wire
from Socket_Singleton._launch import Launch
from Socket_Singleton._outcome import Reason

from . import support

TIMEOUT = 0.006  # a launch's handoff_timeout: room for three attempts (after 2 and 4 ms)
LIMITS = _connection.Limits(4 * 1024 * 1024, 64 * 1024 * 1024, 5.0, 0.5, 4096)
# The budget: the default keeps the suite short on every interpreter; "full"
# (SOCKET_SINGLETON_SIMULATION=full, which CI sets for one run) adds three launches explored
# whole and runs more random schedules. Minutes, not seconds.
FULL = os.environ.get("SOCKET_SINGLETON_SIMULATION", "") == "full"
RANDOM_SCHEDULES = 100000 if FULL else 40000


class SimulationFailure(AssertionError):
    def __init__(self, message):
        super().__init__(message)
        self.schedule = []


def _nonce(size):
    return b"\x01" * size  # the nonces' values do not matter here; the states must repeat


# The attributes below are never named as a string the machines use as a value ("reset",
# "queued", "done", ...): unpickling interns attribute names, so such a value would be one
# object with the name in some copies and not in others, and equal states would pickle apart.


class Conn:
    """One simulated TCP connection: what the launch sent that the host has not read yet (one
    item per send), what the host sent that the launch has not read yet, and who closed."""

    def __init__(self, client, host, accepted):
        self.client = client
        self.backlog_of = host  # the host whose port it reached
        self.host = host if accepted else None  # None: in a draining host's backlog
        self.machine = None
        self.to_host = []
        self.to_client = b""
        self.client_closed = False
        self.eof_read = False
        self.host_closed = False
        self.broken = False
        self.item = None
        self.replied = False  # the host sent a reply on it

    def cut(self):
        self.broken = True
        self.to_host = []
        self.to_client = b""


class Item:
    def __init__(self, client, launch, final):
        self.client = client
        self.launch = launch  # the host's Launch: its fate is shared with the connection
        self.final = final
        self.observed = False


class Host:
    """A host, or (*pending*) a launch that bound a candidate port and holds its listening
    socket aside while it asks the other candidates (``Take(check=True)``): its port is held
    and connections wait in its backlog, but nobody answers them until ``Keep``."""

    def __init__(self, index, owner, threshold, connection_class, port=0, pending=False):
        identity, secret = owner
        self.index = index
        # (identity, secret): whose launches it may take. A tuple of its own: one shared
        # with a launch would pickle differently from an equal one that is not.
        self.owner = (identity, secret)
        self.port = port
        self.secret = secret
        self.threshold = threshold
        self.connection_class = connection_class
        self.protocol = _connection.HostProtocol(secret, 100 + index, LIMITS, _nonce,
                                                 identity=identity)
        self.pending = pending
        self.asked = ()  # as its launch's Client.asked when it became the host
        self.listening = True
        self.accepting = not pending
        self.draining = False
        self.released = False
        self.crashed = False
        self.clients = 0
        self.queue = []
        self.unanswered = []  # delivered launches of waiting clients the application replies to
        self.notices = []  # replies made whose notice the listener has not handled yet


class Client:
    """One launch. Its identity is one token, ``arg#<digit>``: its argument, the start of its
    launch id. Nothing else in the world tells launches apart (no index is stored: a launch's
    place in World.clients is its name in a schedule), so renaming the tokens and reordering
    World.clients turns a state into an equivalent one (see ``canonical``)."""

    def __init__(self, index, secret, wait=False, identity=_wire.NUMBERED, ports=(0,),
                 handoff_class=_handoff.Handoff):
        assert index < 10  # one digit: renaming keeps the pickle's lengths
        token = "arg#%d" % index
        self.args = (token,)
        self.secret = secret
        self.owner = (identity, secret)  # the hosts it may be handed to: see Host.owner
        self.launch_id = token.encode().ljust(_wire.ID_SIZE, b".")
        self.wait = wait  # it waits for its reply (protocol 3)
        self.machine = handoff_class(self.args, secret, TIMEOUT, 0.0, self.launch_id,
                                     urandom=_nonce, extras=_wire.Extras(wait=wait),
                                     identity=identity, ports=ports)
        self.held = None  # the index of the Host it holds aside (pending), if any
        self.asked = ()  # the candidates it asked for a host of its own since it bound one
        self.endless = False  # its pending read waits for a reply, with no deadline
        self.cancelled = False  # its user pressed Ctrl+C while it waited
        self.action = self.machine.start()
        self.conn = None
        self.waiting_read = None  # BANNER or FRAME while a read is pending
        self.wake_at = None
        self.outcome = None
        self.became_host = False
        self.delivered_by = []  # indexes of the hosts that delivered it
        self.was_queued = False  # a host queued it

    @property
    def name(self):
        return "launch %s" % self.args[0]

    @property
    def done(self):
        return self.outcome is not None or self.became_host or self.cancelled

    @property
    def reply_text(self):
        return "reply:" + self.args[0]  # what the application answers this launch (only)


class World:
    """Everything the scheduler can act on. Copied whole to branch."""

    def __init__(self, config, connection_class=_connection.HostConnection, tokens=None):
        """*tokens*: the launches' token numbers, by place (default: their places)."""
        self.config = config
        self.clock = 0.0
        self.ends_left = config.get("ends", 0)
        self.cuts_left = config.get("cuts", 0)
        self.hosts = []
        self.conns = []
        self.raced = ()  # pairs of hosts of one identity that the README's race allows
        self.freed = ()  # the ports a program let go of (with identities only)
        waiting = config.get("wait", ())
        tokens = list(tokens) if tokens is not None else list(range(config["launches"]))
        if "owners" in config:  # launches of several identities: see "identities that collide"
            kinds = [config["identities"][name] for name in config["owners"]]
        else:
            kinds = [(_wire.NUMBERED, config.get("client_secret"), (0,))] * len(tokens)
        handoff_class = config.get("handoff", _handoff.Handoff)  # a broken one, in a test
        self.clients = [Client(token, secret, place in waiting, identity, ports, handoff_class)
                        for place, (token, (identity, secret, ports))
                        in enumerate(zip(tokens, kinds))]
        self.cancels_left = config.get("cancels", 0)
        self.connection_class = connection_class
        if "hosts" in config:
            for name, port in config["hosts"]:
                identity, secret, ports = config["identities"][name]
                # as after a walk that found no host of its own on the later candidates
                self._new_host((identity, secret), port).asked = ports[ports.index(port) + 1:]
        else:
            self._new_host((_wire.NUMBERED,
                            config.get("first_secret", config.get("client_secret"))))

    # -- hosts -----------------------------------------------------------------------------

    def _new_host(self, owner, port=0, pending=False):
        index = len(self.hosts)
        thresholds = self.config.get("thresholds", ())
        threshold = thresholds[index] if index < len(thresholds) else 0
        host = Host(index, owner, threshold, self.connection_class, port, pending)
        self.hosts.append(host)
        return host

    def holder(self, port=0):
        for host in self.hosts:
            if host.listening and host.port == port:
                return host
        return None

    def apply(self, conn, effects):
        host = conn.host
        for effect in effects:
            if isinstance(effect, _connection.Send):
                if effect.data[:1] == _wire.REPLY:
                    self._check_reply(conn, effect.data)
                if not conn.broken:
                    conn.to_client += effect.data
            elif isinstance(effect, _connection.Launched):
                self.apply(conn, self.policy(host, conn, effect.launch))
            elif isinstance(effect, _connection.Close):
                if conn.client_closed:
                    conn.host_closed = True
                else:
                    conn.cut()  # the host resets a peer that has not closed first

    def policy(self, host, conn, launch):
        """The host's policy, as _host.Host.admit applies it with an observer registered."""
        if host.released or host.crashed:
            raise SimulationFailure("host %d took a launch after its release() returned"
                                    % host.index)
        for other in self.hosts:
            if (other is not host and other.owner == host.owner and not other.crashed
                    and not other.pending and not other.protocol.releasing
                    and (min(host.index, other.index), max(host.index, other.index))
                    not in self.raced):
                raise SimulationFailure("hosts %d and %d both take launches"
                                        % (other.index, host.index))
        client = conn.client
        if client.owner != host.owner:
            raise SimulationFailure("%s was taken by host %d, of another identity"
                                    % (client.name, host.index))
        if launch._id != client.launch_id or tuple(launch) != client.args:
            raise SimulationFailure("a launch arrived altered")
        host.clients += 1
        final = bool(host.threshold) and host.clients >= host.threshold
        item = Item(client, launch, final)
        host.queue.append(item)
        client.was_queued = True
        conn.item = item
        if final:
            host.protocol.release()
            host.draining = True
            host.accepting = False
        return conn.machine.decide(Reason.QUEUED, "", True)

    def release(self, host):
        # As Host.stop(): the dispatcher takes back the launches no observer saw and whose
        # client still waits; the listener tells them to retry, then answers the rest.
        for item in [i for i in host.queue if i.launch._settle(Reason.RETRY) == Reason.RETRY]:
            host.queue.remove(item)
            self.settle(host, item, Reason.RETRY)
        host.protocol.release()
        self._close_port(host)
        for conn in self.conns:
            if self._live(conn, host):
                self.apply(conn, conn.machine.abandon())
        host.released = True  # release() has returned: its dispatcher delivers no more

    def settle(self, host, item, reason):
        """As Listener.settle(): the waiting connection answers, or the host remembers."""
        host.protocol.settled(item.launch._id, reason)
        for conn in self.conns:
            if conn.item is item and self._live(conn, host):
                self.apply(conn, conn.machine.settled(reason))

    @staticmethod
    def _live(conn, host):
        return conn.host is host and conn.machine.state is not _connection.DONE and not conn.broken

    def crash(self, host):
        host.crashed = True
        self._close_port(host)
        host.queue = []
        host.unanswered = []
        host.notices = []
        for conn in self.conns:
            if conn.host is host:
                conn.cut()

    def _freed(self, host):
        """*host* let go of its port (noted only with identities, so that numbered worlds keep
        their states)."""
        if "owners" in self.config and host.port not in self.freed:
            self.freed = tuple(sorted((*self.freed, host.port)))

    def _close_port(self, host):
        if host.listening:
            host.listening = False
            host.accepting = False
            self._freed(host)
            for conn in self.conns:  # the backlog is refused when the port goes
                if conn.host is None and conn.backlog_of is host:
                    conn.cut()

    def deliver(self, host):
        item = host.queue.pop(0)
        item.observed = True
        by = item.client.delivered_by
        by.append(host.index)
        if len(by) > 1:
            if len(by) > 2 or not self.hosts[by[0]].crashed:
                raise SimulationFailure("%s delivered %d times (by hosts %s)"
                                        % (item.client.name, len(by), by))
        self.settle(host, item, Reason.DELIVERED)
        if item.client.wait:
            host.unanswered.append(item)
        if item.final:
            self.release(host)  # the dispatcher's on_final: Socket_Singleton.release()

    def _check_reply(self, conn, data):
        """A reply frame the host sends: only on the connection of the launch replied to, and
        at most one per connection."""
        _, payload, _ = _wire.split_frame(data, 1 << 16)
        text = _wire.decode_reply(payload)[1]
        if text != conn.client.reply_text:
            raise SimulationFailure("%s was sent another launch's reply %r"
                                    % (conn.client.name, text))
        if conn.replied:
            raise SimulationFailure("%s was sent two replies" % conn.client.name)
        conn.replied = True

    # -- launches --------------------------------------------------------------------------

    def client_step(self, client):
        """Do the launch's actions up to its next read or pause: what a launch does on its
        own between two of those (take, connect, send) is one step."""
        machine = client.machine
        while True:
            action = client.action
            if not isinstance(action, (_handoff.Exchange, _handoff.Verified, _handoff.Yield)) \
                    and client.conn:
                conn = client.conn
                if isinstance(action, _handoff.Finish) and action.farewell and not conn.broken:
                    self._client_send(client, action.farewell)
                conn.client_closed = True
                client.conn = None
            if isinstance(action, _handoff.Take):
                if self.holder(action.port) is not None:
                    client.action = machine.held()
                    continue
                host = self._new_host(client.owner, action.port, pending=action.check)
                if not action.check:
                    self._became_host(client, host)
                    return
                client.held = host.index
                client.asked = ()
                client.action = machine.bound()
                return  # others may bind or let go of ports before it asks the next one
            if isinstance(action, _handoff.Test):
                client.asked = (*client.asked, action.port)
                held = self.holder(action.port) is not None
                client.action = machine.held() if held else machine.free()
                if held:
                    continue  # it connects at once
                return
            if isinstance(action, _handoff.Keep):
                host = self.hosts[client.held]
                client.held = None
                host.pending = False
                host.accepting = True
                for conn in self.conns:  # the host accepts what waited in its backlog
                    if conn.backlog_of is host and conn.host is None and not conn.broken:
                        conn.host = host
                        conn.machine = self.connection_class(host.protocol)
                        conn.machine.opened()
                self._became_host(client, host)
                return
            if isinstance(action, _handoff.Yield):
                # Closing the socket held aside resets its backlog, as a crash does; it
                # never took a launch.
                self.crash(self.hosts[client.held])
                client.held = None
                client.action = machine.launch(1000, "/")
                continue
            if isinstance(action, _handoff.Connect):
                host = self.holder(action.port)
                if host is None:
                    client.action = machine.refused(self.clock)
                    continue
                conn = Conn(client, host, host.accepting)
                self.conns.append(conn)
                client.conn = conn
                if conn.host is not None:
                    conn.machine = self.connection_class(host.protocol)
                    conn.machine.opened()
                client.action = machine.connected()
                continue
            if isinstance(action, _handoff.Exchange):
                conn = client.conn
                if conn.broken:
                    client.action = machine.failed(_reset_error(), self.clock)
                    continue
                if action.data:
                    self._client_send(client, action.data)
                client.waiting_read = action.expect
                client.endless = action.endless
                return
            if isinstance(action, _handoff.Verified):
                client.action = machine.launch(1000, "/")  # one pid for all: no launch told apart
                continue
            if isinstance(action, _handoff.Sleep):
                client.wake_at = self.clock + action.seconds
                return
            if isinstance(action, _handoff.Finish):
                self._finished(client, action.outcome)
                return
            raise SimulationFailure("unknown action %r" % (action,))

    def _client_send(self, client, data):
        conn = client.conn
        conn.to_host.append(data)
        if conn.backlog_of.owner != client.owner or conn.backlog_of.pending:
            self._check_secret_kept(client, data)

    def _became_host(self, client, host):
        """The launch is the host. Two hosts of one identity at once are allowed only as the
        README's "Choosing an identity" says: a host runs on a later candidate because an
        earlier one was held; the program there quits; a launch binds that earlier candidate
        and asks the later ones (How a launch finds its host), and the host there does not
        answer in time (Limits: it is itself still walking, or the wait ran out; the
        simulation bounds no wait but the deadline). So the earlier candidate was let go of,
        and the host on it asked the later one after binding. A pair so allowed may both
        take launches (``raced``) until one goes away."""
        client.became_host = True
        host.asked = tuple(list(client.asked))  # its own, as Host.owner
        ports = client.machine._ports
        for other in self.hosts:
            if (other is host or other.owner != host.owner or other.crashed or other.pending
                    or not other.listening or other.protocol.releasing):
                continue
            earlier, later = sorted((host, other), key=lambda h: ports.index(h.port))
            why = ""
            if earlier.port not in self.freed:
                why = "no program let go of port %d" % earlier.port
            elif later.port not in earlier.asked:
                why = "host %d kept port %d without asking port %d" % (
                    earlier.index, earlier.port, later.port)
            if why:
                raise SimulationFailure(
                    "%s became a second host of its identity (hosts %d and %d, ports %d and "
                    "%d), though %s" % (client.name, other.index, host.index, other.port,
                                        host.port, why))
            self.raced = tuple(sorted((*self.raced, (other.index, host.index))))

    def _check_secret_kept(self, client, data):
        # Each send whole: the arguments travel in one frame, and the secret never does.
        for secret_byte_run in ([a.encode() for a in client.args]
                                + ([client.secret.encode()] if client.secret else [])):
            if secret_byte_run in data:
                raise SimulationFailure("%s sent %r to a program that is not a host of its "
                                        "identity and secret" % (client.name, secret_byte_run))

    def client_read(self, client):
        conn = client.conn
        machine = client.machine
        expect = client.waiting_read
        client.waiting_read = None
        unit = self._unit(conn.to_client, expect)
        if conn.broken:
            client.action = machine.failed(_reset_error(), self.clock)
        elif unit is not None:
            data, used = unit
            conn.to_client = conn.to_client[used:]
            if expect is _handoff.BANNER:
                client.action = machine.received(data, self.clock)
            else:
                client.action = machine.frame(data[0], data[1], self.clock)
        elif conn.host_closed:
            client.action = machine.closed(self.clock)
        else:
            client.action = machine.timed_out(self.clock)
        self.client_step(client)

    @staticmethod
    def _unit(buf, expect):
        if expect is _handoff.BANNER:
            size = len(_wire.BANNER)
            if len(buf) >= size or not _wire.BANNER.startswith(buf):
                return buf[:size], size
            return None
        found = _wire.split_frame(buf, 1 << 16)
        if found is None:
            return None
        return (found[0], found[1]), found[2]

    def _finished(self, client, outcome):
        client.outcome = outcome
        if outcome.reason == Reason.DELIVERED and not client.delivered_by:
            raise SimulationFailure("%s was acknowledged delivered before its observers ran"
                                    % client.name)
        if outcome.reason in (Reason.QUEUED, Reason.NO_REPLY) and not client.was_queued:
            raise SimulationFailure("%s was acknowledged queued but no host queued it"
                                    % client.name)
        if outcome.reason in _outcome.SUCCESS and outcome.reason not in (Reason.DELIVERED,
                                                                         Reason.QUEUED):
            raise SimulationFailure("%s ended %s" % (client.name, outcome.reason))

    # -- the scheduler's view --------------------------------------------------------------

    def steps(self):
        """What may happen next, as (kind, index) pairs: a launch's index is its place in
        self.clients, a connection's in self.conns."""
        out = []
        clients_running = False
        for index, client in enumerate(self.clients):
            if client.done:
                continue
            clients_running = True
            if client.waiting_read is not None:
                conn = client.conn
                if (conn.broken or conn.host_closed
                        or (self.clock >= client.machine.deadline and not client.endless)
                        or self._unit(conn.to_client, client.waiting_read) is not None):
                    out.append(("read", index))
                if client.endless and self.cancels_left:
                    out.append(("cancel", index))
            elif client.wake_at is not None:
                out.append(("wake", index))
            else:
                out.append(("act", index))
        for host in self.hosts:
            if host.crashed:
                continue
            for n, conn in enumerate(self.conns):
                if conn.host is not host or conn.broken or conn.machine.state == _connection.DONE:
                    continue
                if conn.to_host or (conn.client_closed and not conn.eof_read):
                    out.append(("recv", n))
                if conn.machine.waiting and self.config.get("slow_observers", True):
                    out.append(("expire", n))
                if self.cuts_left and clients_running and not conn.client_closed:
                    out.append(("cut", n))
            if host.queue and not host.released:
                out.append(("deliver", host.index))
            if host.unanswered:  # the application replies, even after release() (any thread)
                out.append(("reply", host.index))
            if host.notices and not host.released:
                out.append(("notice", host.index))
            if host.draining and host.listening:
                out.append(("close-port", host.index))
            if clients_running and self.ends_left and not host.released and not host.pending:
                for kind in self.config["end_kinds"]:
                    out.append((kind, host.index))
        if clients_running and all(step[0] in _DISRUPTIONS for step in out) and any(
                client.endless for client in self.clients if not client.done):
            # Liveness: a waiting launch ends by its reply, not only by a Ctrl+C or a host
            # that goes away (which may never come).
            raise SimulationFailure("stuck: a launch waits for a reply that nothing will send")
        if not out and clients_running:
            out.append(("tick", 0))
        return out

    def do(self, step):
        self._do(step)
        # Forget connections no one will touch again: states that differ only in those are
        # the same state.
        self.conns = [conn for conn in self.conns
                      if conn.client.conn is conn or not (
                          conn.broken or conn.host is None or conn.host.crashed
                          or conn.machine.state == _connection.DONE)]

    def _do(self, step):
        kind, n = step
        if kind == "act":
            self.client_step(self.clients[n])
        elif kind == "read":
            self.client_read(self.clients[n])
        elif kind == "wake":
            client = self.clients[n]
            self.clock = max(self.clock, client.wake_at)
            client.wake_at = None
            client.action = client.machine.woke(self.clock)
            self.client_step(client)
        elif kind == "recv":
            conn = self.conns[n]
            if conn.to_host:
                effects = conn.machine.receive(conn.to_host.pop(0))
            else:
                conn.eof_read = True
                effects = conn.machine.closed()
            self.apply(conn, effects)
        elif kind == "expire":
            conn = self.conns[n]
            self.apply(conn, conn.machine.timed_out())
        elif kind == "deliver":
            self.deliver(self.hosts[n])
        elif kind == "reply":  # Launch.reply(): the listener hears of it later (a notice)
            host = self.hosts[n]
            item = host.unanswered.pop(0)
            item.launch.reply(item.client.reply_text, 7)
            host.notices.append(item.launch)
        elif kind == "notice":  # Listener.replied(), on the I/O thread
            host = self.hosts[n]
            launch = host.notices.pop(0)
            for conn in self.conns:
                if conn.machine is not None and conn.machine.launch_id == launch._id \
                        and self._live(conn, host):
                    self.apply(conn, conn.machine.replied())
        elif kind == "cancel":  # Ctrl+C: the waiting launch closes its connection and exits
            self.cancels_left -= 1
            client = self.clients[n]
            client.conn.client_closed = True
            client.conn = None
            client.waiting_read = None
            client.endless = False
            client.cancelled = True
        elif kind == "close-port":
            self._close_port(self.hosts[n])
        elif kind == "release":
            self.ends_left -= 1
            self.release(self.hosts[n])
        elif kind == "crash":
            self.ends_left -= 1
            self.crash(self.hosts[n])
        elif kind == "cut":  # the network resets the connection: both sides see it
            self.cuts_left -= 1
            conn = self.conns[n]
            conn.cut()
            self.apply(conn, conn.machine.failed("connection failed (%s); dropped", "reset"))
        elif kind == "tick":
            times = [c.machine.deadline for c in self.clients
                     if not c.done and c.waiting_read is not None]
            if not times or min(times) <= self.clock:
                raise SimulationFailure("stuck: nothing can happen, yet launches are running")
            self.clock = min(times)
        else:
            raise SimulationFailure("unknown step %r" % (step,))

    def check_end(self):
        for client in self.clients:
            if not client.done:
                raise SimulationFailure("%s never ended" % client.name)
            if client.cancelled:
                continue  # it stopped waiting: its arguments may have been delivered or not
            count = len(client.delivered_by)
            reason = None if client.became_host else client.outcome.reason
            detail = "" if client.became_host else client.outcome.detail
            if reason == Reason.DELIVERED and count < 1:
                raise SimulationFailure("%s said delivered, was not" % client.name)
            if not client.became_host and client.outcome.reply_text is not None:
                if client.outcome.reply_text != client.reply_text:
                    raise SimulationFailure("%s got another launch's reply %r"
                                            % (client.name, client.outcome.reply_text))
                if not count:
                    raise SimulationFailure("%s got a reply but was never delivered"
                                            % client.name)
            if client.wait and reason == Reason.DELIVERED and client.outcome.reply_text is None:
                raise SimulationFailure("%s waited, yet ended without its reply" % client.name)
            maybe = reason in (Reason.DELIVERED, Reason.QUEUED, Reason.NO_REPLY, None) or (
                reason == Reason.NO_ANSWER and ("may have been delivered" in detail
                                                or "may still deliver it" in detail))
            if count and not maybe:
                raise SimulationFailure("%s was delivered but ended %s: %s"
                                        % (client.name, reason, client.outcome.detail))
        if "owners" in self.config and self.ends_left == self.config.get("ends", 0):
            self._check_each_identity_runs()  # no host went away in this schedule

    def _check_each_identity_runs(self):
        """With no host going away, each identity that launched has its host at the end,
        whoever holds the other candidates; unless all its launches ran out of time (the
        scheduler may make any wait last until the deadline)."""
        for name in sorted(set(self.config["owners"])):
            owner = self.config["identities"][name][:2]
            if any(host.owner == owner and host.listening and not host.pending
                   for host in self.hosts):
                continue
            ends = [client.outcome.reason if client.outcome else "host"
                    for client in self.clients if client.owner == owner]
            if any(reason != Reason.NO_ANSWER for reason in ends):
                raise SimulationFailure("identity %s has no host at the end; its launches "
                                        "ended %s" % (name, ", ".join(ends)))


_DISRUPTIONS = ("cancel", "release", "crash", "cut")  # may happen; nothing waits for them


def _reset_error():
    return ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")


def _rank(client, world):
    """A launch's situation, without its name (its token): launches are put in this order."""
    machine = client.machine
    outcome = client.outcome
    identity, secret = client.owner
    return (identity.app_id, identity.tag, secret or "", machine.port,
            -1 if client.held is None else client.held,
            client.asked, client.became_host, outcome.reason if outcome else "",
            outcome.detail if outcome else "", machine._phase.name, machine._attempts,
            machine._delay, machine._silent, machine._sent,
            machine._last.name if machine._last else "",
            machine._refused_since or -1.0, machine._pid or 0, type(client.action).__name__,
            client.waiting_read.name if client.waiting_read else "", client.wake_at or -1.0,
            client.delivered_by, client.was_queued, client.endless, client.cancelled,
            [(conn is client.conn, conn.backlog_of.index, conn.host is None,
              conn.machine.state.name if conn.machine else "", len(conn.to_host),
              len(conn.to_client), conn.client_closed, conn.eof_read, conn.host_closed,
              conn.broken) for conn in world.conns if conn.client is client],
            [([n for n, item in enumerate(host.queue) if item.client is client],
              host.protocol.answer_for(client.launch_id) or ("", "")) for host in world.hosts])


def canonical(world, exact=False):
    """The key of the world's state up to the launches' names; puts the world in the order
    of launches the key has.

    Launches are alike but for their token (``Client``), which the machines only compare
    for equality and which always has the same length; the order of World.clients and
    World.conns only orders the list of steps. So renaming the tokens (the same way
    everywhere) and reordering those lists gives a state with the same futures, the same
    invariants and the same number of schedules. The key is the world's pickle, with the
    launches in the order of ``_rank`` (ties: as they are) and each token renamed after its
    launch's place: two states get the same key only if one is the other renamed, and
    ``pickle.loads(key)`` is such a renamed copy. *exact* (the exhaustive search) tries every
    order of the launches ``_rank`` ties for the least key, so that renamings of one state
    get one key; without it (the end of a random schedule, up to 120 orders of five
    launches) they may get two, as without this reduction."""
    clients = world.clients
    ranks = [_rank(client, world) for client in clients]
    order = sorted(range(len(clients)), key=ranks.__getitem__)
    if not exact:
        return _pickled(world, [clients[n] for n in order])
    orders = [[]]
    start = 0
    for end in range(1, len(order) + 1):
        if end == len(order) or ranks[order[end]] != ranks[order[start]]:
            tied = order[start:end]
            orders = [done + list(more) for done in orders
                      for more in itertools.permutations(tied)]
            start = end
    best = None
    for order in orders:
        key = _pickled(world, [clients[n] for n in order])
        if best is None or key < best[0]:
            best = (key, order)
    if len(orders) > 1:
        _pickled(world, [clients[n] for n in best[1]])
    return best[0]


def _pickled(world, clients):
    """Put the world in this order of launches; its pickle with each token renamed after
    its launch's place."""
    place = {id(client): n for n, client in enumerate(clients)}
    world.clients = clients
    world.conns.sort(key=lambda conn: place[id(conn.client)])
    key = pickle.dumps(world, pickle.HIGHEST_PROTOCOL)
    # Each token that changes goes through "arg@" (never in a pickle otherwise), so that one
    # renamed is not renamed again; the lengths stay, and so does the pickle's framing.
    renamed = False
    for n, client in enumerate(clients):
        token = client.args[0].encode()
        if token != _TOKENS[n]:
            key = key.replace(token, _RENAMED[n])
            renamed = True
    return key.replace(b"arg@", b"arg#") if renamed else key


_TOKENS = [b"arg#%d" % n for n in range(10)]
_RENAMED = [b"arg@%d" % n for n in range(10)]


def _copy(obj):
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    return new


def clone(world):
    """A copy of the world for a branch, as ``pickle.loads(pickle.dumps(world))`` but faster:
    new objects and containers for whatever a step changes, the immutable values (strings,
    bytes, numbers, tuples, Outcome, Limits, the config) shared. ``test_a_clone_is_a_copy``
    holds it to the pickle's copy."""
    new = _copy(world)
    clients = {}
    for client in world.clients:
        copy = clients[id(client)] = _copy(client)
        copy.machine = _copy(client.machine)
        if client.machine._checking is not None:
            copy.machine._checking = list(client.machine._checking)
        copy.delivered_by = list(client.delivered_by)
    new.clients = [clients[id(client)] for client in world.clients]
    items = {}
    launches = {}

    def launch_copy(launch):
        copy = launches.get(id(launch))
        if copy is None:
            copy = launches[id(launch)] = Launch(tuple(launch))
            copy.__dict__.update(launch.__dict__)
        return copy

    def item_copy(item):
        copy = items.get(id(item))
        if copy is None:
            copy = items[id(item)] = _copy(item)
            copy.client = clients[id(item.client)]
            copy.launch = launch_copy(item.launch)
        return copy

    hosts = {}
    for host in world.hosts:
        copy = hosts[id(host)] = _copy(host)
        copy.protocol = _copy(host.protocol)
        copy.protocol._answers = dict(host.protocol._answers)
        copy.queue = [item_copy(item) for item in host.queue]
        copy.unanswered = [item_copy(item) for item in host.unanswered]
        copy.notices = [launch_copy(launch) for launch in host.notices]
    new.hosts = [hosts[id(host)] for host in world.hosts]
    new.conns = []
    for conn in world.conns:
        copy = _copy(conn)
        copy.client = clients[id(conn.client)]
        if conn.client.conn is conn:
            copy.client.conn = copy
        copy.backlog_of = hosts[id(conn.backlog_of)]
        if conn.host is not None:
            copy.host = hosts[id(conn.host)]
        if conn.machine is not None:
            copy.machine = _copy(conn.machine)
            copy.machine._host = copy.host.protocol
            copy.machine._buf = bytearray(conn.machine._buf)
            if conn.machine._launch is not None:
                copy.machine._launch = launch_copy(conn.machine._launch)
        copy.to_host = list(conn.to_host)
        if conn.item is not None:
            copy.item = item_copy(conn.item)
        new.conns.append(copy)
    for client in new.clients:
        if client.conn is not None and client.conn not in new.conns:
            raise SimulationFailure("clone: a launch's connection is not in World.conns")
    return new


def _digest(key):
    # 128 bits: with a few million states, two alike by chance are about 1e-26 likely.
    return hashlib.blake2b(key, digest_size=16).digest()


class Explorer:
    def __init__(self, connection_class=_connection.HostConnection):
        self.connection_class = connection_class
        self.schedules = 0
        self.random_schedules = 0
        self.states = set()  # digests of the canonical keys

    def exhaustive(self, config):
        """Every interleaving: each state (up to the launches' names: ``canonical``)
        explored once; returns the complete paths."""
        paths = {}
        on_stack = set()

        def explore(world):
            # The canonical key (its digest) is the state's identity; each branch starts from
            # a clone of the world, in the key's order.
            key = canonical(world, exact=True)
            digest = _digest(key)
            if digest in paths:
                return paths[digest]
            if digest in on_stack:
                raise SimulationFailure("a schedule loops")
            self.states.add(digest)
            steps = world.steps()  # as the key's copy's: the order is the same
            if not steps:
                world.check_end()
                paths[digest] = 1
                return 1
            on_stack.add(digest)
            total = 0
            for step in steps:
                branch = clone(world)
                try:
                    branch.do(step)
                    total += explore(branch)
                except SimulationFailure as failure:
                    failure.schedule.insert(0, step)  # the schedule that broke: see replay()
                    raise
            on_stack.discard(digest)
            paths[digest] = total
            return total

        count = explore(World(config, self.connection_class))
        self.schedules += count
        return count

    def random(self, config, seed):
        rng = random.Random(seed)
        world = World(config, self.connection_class)
        for _ in range(10000):
            steps = world.steps()
            if not steps:
                world.check_end()
                self.schedules += 1
                self.random_schedules += 1
                self.states.add(_digest(canonical(world)))
                return world
            world.do(steps[rng.randrange(len(steps))])
        raise SimulationFailure("schedule %d did not end" % seed)


def summary(explorer):
    """The simulation's one line: every schedule counted, the complete paths of the exhaustive
    search (counted over the state graph, so far more than the states) and the random runs
    apart."""
    return ("simulation: %d schedules (%d explored paths, %d random runs), %d distinct states, "
            "invariants held" % (explorer.schedules, explorer.schedules
                                 - explorer.random_schedules, explorer.random_schedules,
                                 len(explorer.states)))


def replay(config, schedule, connection_class=_connection.HostConnection):
    """The world at the end of a schedule from Explorer.exhaustive (a failure's
    ``schedule``), whose steps name launches and connections in the order the search put
    them in: it is done here the same way."""
    world = World(config, connection_class)
    for step in schedule:
        canonical(world, exact=True)
        world = clone(world)
        world.do(step)
    return world


# Exhaustive: two launches and a host that crashes or releases at any step; two launches with
# the threshold; two launches meeting a host with another secret, which releases at any step;
# two launches and a connection reset at any step. Three launches and one release, explored
# whole, take minutes: only with the full budget (their random schedules run in both).
EXHAUSTIVE = [
    {"launches": 2, "ends": 1, "end_kinds": ("crash", "release")},
    {"launches": 2, "wait": (0,), "ends": 1, "end_kinds": ("crash", "release"), "cancels": 1},
    {"launches": 2, "ends": 0, "end_kinds": (), "thresholds": (1, 1, 1)},
    {"launches": 2, "ends": 1, "end_kinds": ("release",), "client_secret": "s3cret",
     "first_secret": "other"},
    {"launches": 2, "cuts": 1, "end_kinds": ()},
]
WAITING = EXHAUSTIVE[1]  # a launch that waits for its reply
EXHAUSTIVE_FULL = [
    {"launches": 3, "ends": 1, "end_kinds": ("release",)},
]
THREE_LAUNCH_STATES = 300000  # fewer would mean they were not explored (543,625 now)
# Random: more launches, hosts that crash, release and reach their threshold.
RANDOM = [
    {"launches": 3, "ends": 1, "end_kinds": ("release",)},
    {"launches": 4, "ends": 3, "end_kinds": ("crash", "release")},
    {"launches": 4, "ends": 1, "cuts": 2, "end_kinds": ("crash", "release")},
    {"launches": 5, "ends": 2, "end_kinds": ("release", "crash"), "thresholds": (2, 0, 1, 0)},
    {"launches": 4, "ends": 2, "end_kinds": ("release",), "client_secret": "s3cret",
     "first_secret": "other"},
    # replies: two of four launches wait for theirs; hosts that release or crash meanwhile
    {"launches": 4, "wait": (0, 2), "ends": 2, "end_kinds": ("release", "crash"), "cancels": 1},
]


class Hasty(_connection.HostConnection):
    """Broken on purpose: answers "delivered" as soon as the launch is queued."""

    def decide(self, reason, detail="", wait=False):
        return super().decide(Reason.DELIVERED, "", False)


class Forgetful(_connection.HostConnection):
    """Broken on purpose: takes a retried launch as a new one."""

    def decide(self, reason, detail="", wait=False):
        self._launch_id = b""  # nothing is recorded under the launch's id
        return super().decide(reason, detail, wait)


class Impatient(_connection.HostConnection):
    """Broken on purpose: with two launches waiting for the observers already, answers
    "delivered" at once (only a third launch shows it)."""

    def decide(self, reason, detail="", wait=False):
        waiting = sum(answer[0] == Reason.QUEUED for answer in self._host._answers.values())
        if waiting >= 2:
            return super().decide(Reason.DELIVERED, "", False)
        return super().decide(reason, detail, wait)


class Deaf(_connection.HostConnection):
    """Broken on purpose: never sends a reply made after the acknowledgement."""

    def replied(self):
        return []


class Abrupt(_connection.HostConnection):
    """Broken on purpose: a host that releases closes a waiting launch's connection without a
    word, so the reset may discard its unread acknowledgement."""

    def abandon(self):
        if self.state is _connection.AWAIT_REPLY:
            out = []
            self._end(out)
            return out
        return super().abandon()


class TestHandoffMachine(unittest.TestCase):
    def test_a_launch_that_reached_a_host_after_a_reset_is_not_called_foreign(self):
        # Found by the simulation: a host that releases resets a peer whose preamble it has
        # not read; the launch then reaches the next host, which is slow to answer. It was
        # called "foreign (it resets every connection)", "not sent", though it was delivered.
        machine = _handoff.Handoff(("x",), None, 1.0, 0.0, b"i" * _wire.ID_SIZE,
                                    urandom=_nonce)
        self.assertIsInstance(machine.start(), _handoff.Take)
        self.assertIsInstance(machine.held(), _handoff.Connect)
        action = machine.connected()
        self.assertEqual((action.data, action.expect), (_wire.PREAMBLE, _handoff.BANNER))
        self.assertIsInstance(machine.failed(_reset_error(), 0.1), _handoff.Sleep)
        self.assertIsInstance(machine.woke(0.2), _handoff.Take)
        machine.held()
        machine.connected()
        self.assertIs(machine.received(_wire.BANNER, 0.3).expect, _handoff.FRAME)
        welcome = _wire.encode_welcome3(7, 1024, _nonce(_wire.NONCE_SIZE), b"", _wire.NUMBERED)
        kind, payload, _ = _wire.split_frame(welcome, 1 << 16)
        action = machine.frame(kind, payload, 0.4)
        self.assertIsInstance(action, _handoff.Verified)
        self.assertEqual(action.pid, 7)
        self.assertIsInstance(machine.launch(1, "/"), _handoff.Exchange)
        action = machine.timed_out(1.0)
        self.assertIsInstance(action, _handoff.Finish)
        outcome = action.outcome
        self.assertEqual((outcome.reason, outcome.detail, outcome.host_pid),
                         ("no-answer", "the running instance did not acknowledge the launch "
                          "within 1 s; it may still deliver it", 7))


class TestWalkAfterALostAnswer(unittest.TestCase):
    def test_a_launch_whose_host_died_with_it_is_not_called_foreign(self):
        # Found by the identities simulation: a launch bound candidate 5, found its host on
        # candidate 6 and handed the arguments over; the host delivered them and died before
        # its acknowledgement left. Asking again, the launch found another user's host on 6
        # and was told "foreign: all candidate ports are held by other programs", which says
        # the arguments went nowhere, though they may have been delivered.
        identity, secret = EDITOR
        machine = _handoff.Handoff(("x",), secret, 1.0, 0.0, b"i" * _wire.ID_SIZE,
                                   identity=identity, ports=(5, 6), urandom=_nonce)
        action = machine.start()
        self.assertEqual((type(action), action.port, action.check), (_handoff.Take, 5, True))
        self.assertIsInstance(machine.bound(), _handoff.Test)
        self.assertEqual(machine.held().port, 6)
        self.assertIsInstance(machine.connected(), _handoff.Exchange)
        machine.received(_wire.BANNER, 0.1)
        self.assertIsInstance(machine.frame(*_welcome(EDITOR), now=0.2), _handoff.Yield)
        self.assertIsInstance(machine.launch(1, "/"), _handoff.Exchange)
        self.assertIsInstance(machine.closed(0.3), _handoff.Sleep)  # the host died
        action = machine.woke(0.4)
        for _ in range(4):  # every candidate, now held by the other user's hosts
            if isinstance(action, _handoff.Finish):
                break
            self.assertIsInstance(action, _handoff.Take)
            self.assertIsInstance(machine.held(), _handoff.Connect)
            machine.connected()
            machine.received(_wire.BANNER, 0.5)
            action = machine.frame(*_welcome(THEIR_EDITOR), now=0.6)
        outcome = action.outcome
        self.assertEqual((outcome.reason, outcome.unconfirmed), (Reason.NO_ANSWER, True))
        self.assertIn("may have been delivered", outcome.detail)


def _welcome(owner):
    """A welcome (kind, payload) from a host of *owner*, proving its key."""
    identity, secret = owner
    nonce = _nonce(_wire.NONCE_SIZE)
    proof = _wire.proof(secret, b"host", nonce, nonce)
    kind, payload, _ = _wire.split_frame(_wire.encode_welcome3(7, 1024, nonce, proof, identity),
                                         1 << 16)
    return kind, payload


class TestSendOnly(unittest.TestCase):
    def test_a_host_that_vanished_with_the_launch_does_not_make_it_not_sent(self):
        # socket-singleton send (take=False): the host read the launch, then died before its
        # acknowledgement left; the next try finds nothing listening. The arguments may have
        # been delivered: "not-running" ("The arguments were not sent") would be untrue.
        machine = _handoff.Handoff(("x",), None, 1.0, 0.0, b"i" * _wire.ID_SIZE, take=False,
                                   urandom=_nonce)
        self.assertIsInstance(machine.start(), _handoff.Connect)
        machine.connected()
        machine.received(_wire.BANNER, 0.1)
        welcome = _wire.encode_welcome3(7, 1024, _nonce(_wire.NONCE_SIZE), b"", _wire.NUMBERED)
        kind, payload, _ = _wire.split_frame(welcome, 1 << 16)
        self.assertIsInstance(machine.frame(kind, payload, 0.2), _handoff.Verified)
        self.assertIsInstance(machine.launch(1, "/"), _handoff.Exchange)
        self.assertIsInstance(machine.closed(0.3), _handoff.Sleep)  # it asks again
        self.assertIsInstance(machine.woke(0.4), _handoff.Connect)
        outcome = machine.refused(0.5).outcome
        self.assertEqual((outcome.reason, outcome.unconfirmed), ("no-answer", True))
        self.assertIn("may have been delivered", outcome.detail)


class TestSimulation(unittest.TestCase):
    def test_every_schedule_keeps_the_invariants(self):
        explorer = Explorer()
        for config in EXHAUSTIVE:
            explorer.exhaustive(config)
        self.assertGreater(len(explorer.states), 5000)
        if FULL:
            before = len(explorer.states)
            for config in EXHAUSTIVE_FULL:
                explorer.exhaustive(config)
            self.assertGreater(len(explorer.states) - before, THREE_LAUNCH_STATES)
        per_config = -(-RANDOM_SCHEDULES // len(RANDOM))  # rounded up: the budget is a floor
        for n, config in enumerate(RANDOM):
            for seed in range(per_config):
                explorer.random(config, n * 1000003 + seed)
        self.assertEqual(explorer.random_schedules, per_config * len(RANDOM))
        self.assertGreaterEqual(explorer.random_schedules, 100000 if FULL else 40000)
        self.assertGreaterEqual(explorer.schedules, 100000)
        # The one line the issue asks for; the budget is asserted above, not printed.
        print(summary(explorer))

    def test_the_line_is_the_one_ci_looks_for_and_the_readme_describes(self):
        explorer = Explorer()
        explorer.schedules, explorer.random_schedules = 1469989528, 40000
        explorer.states = set(range(20578))
        line = summary(explorer)
        self.assertEqual(line, "simulation: 1469989528 schedules (1469949528 explored paths, "
                         "40000 random runs), 20578 distinct states, invariants held")
        with open(os.path.join(support.ROOT, ".ci", "run"), encoding="utf-8") as ci:
            pattern = re.search(r"grep -Eq '(simulation: [^']*)'", ci.read()).group(1)
        self.assertRegex(line, pattern)
        with open(os.path.join(support.ROOT, "README.md"), encoding="utf-8") as readme:
            self.assertIn("`simulation: <N> schedules (<P> explored paths, <R> random runs), "
                          "<M> distinct states, invariants held`", readme.read())

    def test_renamed_launches_reach_states_with_the_same_key(self):
        # What canonical() relies on: a launch's token is all that tells it apart, and the
        # order of World.clients only names the steps. Launches named the other way round
        # (the first launch has the last token), run by the same schedules, reach states
        # with the same keys and offer the same steps; and the exact key does not depend on
        # the order of World.clients. Also with launches of two identities.
        for config in RANDOM + IDENTITY_RANDOM:
            for seed in range(8):
                rng = random.Random(seed)
                world = World(config)
                renamed = World(config, tokens=reversed(range(config["launches"])))
                self.assertNotEqual(renamed.clients[0].launch_id, world.clients[0].launch_id)
                while True:
                    key = canonical(world)
                    self.assertEqual(canonical(renamed), key)
                    copy = pickle.loads(key)
                    self.assertEqual([client.args for client in copy.clients],
                                     [("arg#%d" % n,) for n in range(config["launches"])])
                    shuffled = pickle.loads(key)
                    rng.shuffle(shuffled.clients)
                    self.assertEqual(canonical(shuffled, exact=True),
                                     canonical(copy, exact=True))
                    steps = world.steps()
                    self.assertEqual(renamed.steps(), steps)
                    if not steps:
                        break
                    step = steps[rng.randrange(len(steps))]
                    world.do(step)
                    renamed.do(step)

    def test_a_clone_is_a_copy(self):
        # What the exhaustive search relies on: a clone pickles as the world does (the same
        # values, the same objects shared), and a step on it leaves the world as it was.
        for config in RANDOM + EXHAUSTIVE + IDENTITY_RANDOM + IDENTITY_EXHAUSTIVE:
            for seed in range(10):
                rng = random.Random(seed)
                world = World(config)
                while True:
                    steps = world.steps()
                    if not steps:
                        break
                    before = pickle.dumps(world, pickle.HIGHEST_PROTOCOL)
                    copy = clone(world)
                    self.assertEqual(pickle.dumps(copy, pickle.HIGHEST_PROTOCOL), before)
                    copy.do(steps[rng.randrange(len(steps))])
                    self.assertEqual(pickle.dumps(world, pickle.HIGHEST_PROTOCOL), before)
                    world = copy

    def test_a_host_that_acknowledges_before_delivering_is_caught(self):
        with self.assertRaisesRegex(SimulationFailure, "acknowledged delivered before its "
                                    "observers ran"):
            Explorer(Hasty).exhaustive(EXHAUSTIVE[0])

    def test_a_host_that_forgets_launch_ids_is_caught(self):
        # Without the record of answered ids, a retried launch is delivered a second time by a
        # host that did not crash.
        with self.assertRaisesRegex(SimulationFailure, "delivered 2 times") as caught:
            Explorer(Forgetful).exhaustive(EXHAUSTIVE[-1])
        with self.assertRaisesRegex(SimulationFailure, "delivered 2 times"):
            replay(EXHAUSTIVE[-1], caught.exception.schedule, Forgetful)


    def test_a_host_that_never_sends_a_late_reply_is_caught(self):
        # The launch that waits for its reply would wait for ever.
        with self.assertRaisesRegex(SimulationFailure, "stuck"):
            Explorer(Deaf).exhaustive(WAITING)

    def test_a_host_that_drops_a_waiting_launch_without_a_word_is_caught(self):
        with self.assertRaisesRegex(SimulationFailure, "delivered 2 times"):
            Explorer(Abrupt).exhaustive(WAITING)

    def test_a_host_that_stops_waiting_at_the_third_launch_is_caught(self):
        # Two launches explored whole do not show it; three do, early in the search (so this
        # runs with either budget), and the schedule found replays to the same failure.
        Explorer(Impatient).exhaustive(EXHAUSTIVE[0])
        config = EXHAUSTIVE_FULL[0]
        message = "acknowledged delivered before its observers ran"
        with self.assertRaisesRegex(SimulationFailure, message) as caught:
            Explorer(Impatient).exhaustive(config)
        with self.assertRaisesRegex(SimulationFailure, message):
            replay(config, caught.exception.schedule, Impatient)


# -- the candidate walk of an application's ports ------------------------------------------------

MINE = _wire.Identity("org.example.Editor", "user", b"mine-tag")
# What may hold each candidate port: nothing, a program that is not a host, or a host of some
# identity with some secret (its key, in scope "user").
OCCUPANTS = {
    "free": None,
    "foreign": "foreign",
    "mine": (MINE, "my key"),
    "other user": (_wire.Identity("org.example.Editor", "user", b"their-tg"), "their key"),
    "other user, my tag": (MINE, "their key"),  # a tag is no proof: the key decides
    "other app": (_wire.Identity("org.example.Viewer", "user", b"mine-tag"), "my key"),
    "other scope": (_wire.Identity("org.example.Editor", "machine"), None),
    "numbered": (_wire.NUMBERED, None),
}


class CandidateWorld:
    """One launch of MINE walking the candidates, each held as *layout* says, run to its end
    in one deterministic sequence (the walk is sequential: each step waits for the last)."""

    def __init__(self, layout):
        self.layout = layout
        self.hosts = {}
        for index, name in enumerate(layout):
            occupant = OCCUPANTS[name]
            if isinstance(occupant, tuple):
                identity, secret = occupant
                self.hosts[index] = _connection.HostProtocol(secret, 100 + index, LIMITS, _nonce,
                                                             identity=identity)
        self.bound = set()  # candidates this launch holds
        self.launched = []  # (candidate, args) for each launch a host took
        self.sent = {}  # candidate -> every byte the launch sent there

    def run(self):
        ports = tuple(range(len(self.layout)))
        machine = _handoff.Handoff(("private.txt",), "my key", 2.0, 0.0, b"\x07" * 16,
                                   identity=MINE, ports=ports, urandom=_nonce)
        action, conn, answer = machine.start(), None, b""
        for _ in range(1000):
            if conn is not None and not isinstance(action, (_handoff.Exchange, _handoff.Verified,
                                                            _handoff.Yield)):
                conn = None
            if isinstance(action, _handoff.Take):
                if self.layout[action.port] != "free" or self.bound:
                    action = machine.held()
                elif not action.check:
                    return ("host", action.port)
                else:
                    self.bound.add(action.port)
                    action = machine.bound()
            elif isinstance(action, _handoff.Test):
                free = self.layout[action.port] == "free"
                action = machine.free() if free else machine.held()
            elif isinstance(action, _handoff.Keep):
                return ("host", self.bound.pop())
            elif isinstance(action, _handoff.Yield):
                self.bound.clear()
                action = machine.launch(1000, "/")
            elif isinstance(action, _handoff.Connect):
                if self.layout[action.port] == "free":
                    action = machine.refused(0.0)
                    continue
                conn, answer = action.port, b""
                host = self.hosts.get(conn)
                machine_conn = host.connection() if host is not None else None
                action = machine.connected()
            elif isinstance(action, _handoff.Exchange):
                self.sent.setdefault(conn, []).append(action.data)
                if machine_conn is None:  # a program that answers something else
                    action = machine.received(b"HTTP/1.0 400 Bad Request\r\n", 0.0)
                    continue
                for effect in machine_conn.receive(action.data) if action.data else []:
                    if isinstance(effect, _connection.Send):
                        answer += effect.data
                    elif isinstance(effect, _connection.Launched):
                        self.launched.append((conn, tuple(effect.launch)))
                        for sent in machine_conn.decide(Reason.DELIVERED):
                            if isinstance(sent, _connection.Send):
                                answer += sent.data
                if action.expect is _handoff.BANNER:
                    data, answer = answer[:len(_wire.BANNER)], answer[len(_wire.BANNER):]
                    action = machine.received(data, 0.0)
                else:
                    kind, payload, used = _wire.split_frame(answer, 1 << 16)
                    answer = answer[used:]
                    action = machine.frame(kind, payload, 0.0)
            elif isinstance(action, _handoff.Verified):
                action = machine.launch(1000, "/")
            elif isinstance(action, _handoff.Finish):
                return (action.outcome.reason, machine.port)
            else:
                raise AssertionError("unexpected action %r" % (action,))
        raise AssertionError("the walk did not end")


class TestCandidateWalk(unittest.TestCase):
    """Every layout of three candidate ports over OCCUPANTS (512 of them): a launch with an app id
    reaches a host of its own identity whenever one holds a candidate, never sends its arguments
    to anything else, and otherwise becomes the host on the first free candidate or says that
    all are held by others."""

    def test_every_layout(self):
        for layout in itertools.product(OCCUPANTS, repeat=3):
            with self.subTest(layout=layout):
                world = CandidateWorld(layout)
                end = world.run()
                for port, data in world.sent.items():
                    if layout[port] != "mine":
                        self.assertFalse(any(b"private.txt" in chunk for chunk in data),
                                         "sent to %s" % layout[port])
                mine = [port for port, name in enumerate(layout) if name == "mine"]
                if mine:
                    self.assertEqual(end, (Reason.DELIVERED, mine[0]))
                    self.assertEqual(world.launched, [(mine[0], ("private.txt",))])
                elif "free" in layout:
                    self.assertEqual(end, ("host", layout.index("free")))
                    self.assertEqual(world.launched, [])
                else:
                    self.assertEqual(end, (Reason.FOREIGN, 2))
                    self.assertEqual(world.launched, [])


# -- identities that collide on their candidate ports -------------------------------------------
#
# World runs launches and hosts of several identities when its config names them: each launch
# walks its identity's candidate ports (Take(check=True), Test, Keep, Yield) and each host
# announces its identity, on a port of its own. Beyond the invariants above (checked across
# identities: a host takes only launches of its own identity and secret, and no byte of a
# launch's arguments or secret goes to anything else, another identity's host or a launch's
# socket held aside), every schedule is checked for:
#
# * two hosts of one identity at once only as the README's "Choosing an identity" allows (see
#   World._became_host): a program let go of the earlier candidate of the two, and the host
#   on it asked the later one after binding, and found no host of its own there in time. Only
#   such a pair may both take launches, until one goes away;
# * with no host going away, each identity that launched has its host at the end (two
#   identities that collide both run), unless all of its launches ran out of time.

EDITOR = (_wire.Identity("org.example.Editor", "user", b"mine-tag"), "my key")
VIEWER = (_wire.Identity("org.example.Viewer", "user", b"mine-tag"), "my key")  # one user's key
THEIR_EDITOR = (_wire.Identity("org.example.Editor", "user", b"their-tg"), "their key")
TWO_APPS = {"A": (*EDITOR, (0, 1)), "B": (*VIEWER, (0, 1))}  # the same candidates
TWO_USERS = {"A": (*EDITOR, (0, 1)), "B": (*THEIR_EDITOR, (1, 0))}  # crossed


def _colliding(identities, owners, hosts=(), ends=0, **more):
    """A config: a launch of each identity named in *owners*, hosts (identity, port) already
    running, and *ends* hosts that release or crash at any step."""
    config = {"identities": identities, "owners": owners, "launches": len(owners),
              "hosts": hosts, "ends": ends, "end_kinds": ("release", "crash") if ends else ()}
    config.update(more)
    return config


# Exhaustive: three launches of two identities on a free machine; two launches meeting B's
# host on A's first candidate, which releases or crashes at any step. Three launches with that
# host take minutes: only with the full budget.
IDENTITY_EXHAUSTIVE = [
    _colliding(TWO_APPS, ("A", "A", "B")),
    _colliding(TWO_USERS, ("A", "A", "B")),
    _colliding(TWO_APPS, ("A", "A"), hosts=(("B", 0),), ends=1),
    _colliding(TWO_APPS, ("A", "B"), hosts=(("B", 0),), ends=1),
    _colliding(TWO_USERS, ("A", "B"), hosts=(("B", 0),), ends=1),
]
IDENTITY_EXHAUSTIVE_FULL = [
    _colliding(TWO_APPS, ("A", "A", "B"), hosts=(("B", 0),), ends=1),
]
IDENTITY_RANDOM = [
    _colliding(TWO_USERS, ("A", "B", "A", "B")),
    _colliding(TWO_APPS, ("A", "A", "B"), hosts=(("B", 0),), ends=1),
    _colliding(TWO_USERS, ("A", "A", "B", "B"), hosts=(("B", 0), ("A", 1)), ends=2),
    _colliding(TWO_APPS, ("A", "B", "A", "B"), hosts=(("B", 0),), ends=2, cuts=1),
]
IDENTITY_RANDOM_SCHEDULES = 40000 if FULL else 6000


class Impostor(_connection.HostConnection):
    """Broken on purpose: a host that welcomes a launch as a host of whatever application and
    user the launch names."""

    def _on_frame(self, out, kind, payload):
        host = self._host
        own = host.identity
        if self.state is _connection.HELLO and kind == _wire.HELLO:
            host.identity = _wire.decode_hello(payload)[1] or own
        try:
            super()._on_frame(out, kind, payload)
        finally:
            host.identity = own


class Trusting(_handoff.Handoff):
    """Broken on purpose: a launch that does not compare the host's identity with its own."""

    def _welcomed(self, kind, payload, now):
        own, self._identity = self._identity, _wire.NUMBERED
        try:
            return super()._welcomed(kind, payload, now)
        finally:
            self._identity = own


class Blind(_handoff.Handoff):
    """Broken on purpose: a launch that binds a candidate keeps it without asking the later
    candidates for a host of its own."""

    def bound(self):
        return _handoff.Keep()


class Stubborn(_handoff.Handoff):
    """Broken on purpose: a launch that ends at the first candidate held by another program,
    as a launch on a numbered port does, instead of walking on."""

    def _pass(self, outcome, farewell):
        return _handoff.Finish(outcome, farewell)


class TestIdentitiesSimulation(unittest.TestCase):
    def test_every_schedule_keeps_the_invariants_across_identities(self):
        explorer = Explorer()
        for config in IDENTITY_EXHAUSTIVE + (IDENTITY_EXHAUSTIVE_FULL if FULL else []):
            explorer.exhaustive(config)
        self.assertGreater(len(explorer.states), 300000 if FULL else 9000)
        per_config = -(-IDENTITY_RANDOM_SCHEDULES // len(IDENTITY_RANDOM))
        raced = set()
        for n, config in enumerate(IDENTITY_RANDOM):
            for seed in range(per_config):
                world = explorer.random(config, n * 1000003 + seed)
                if world.raced:
                    raced.add(n)
        self.assertEqual(explorer.random_schedules, per_config * len(IDENTITY_RANDOM))
        # Two hosts of one identity, as the README's race allows, are not only allowed: the
        # random schedules reach them.
        self.assertTrue(raced)

    def test_a_launch_that_does_not_walk_on_is_caught(self):
        # The application whose first candidate another one holds would not run.
        # Also where a host may go away: the schedules in which it does not still count.
        for config in IDENTITY_EXHAUSTIVE[0], IDENTITY_EXHAUSTIVE[2]:
            with self.subTest(config=config), self.assertRaisesRegex(
                    SimulationFailure, "identity . has no host at the end; "
                    "its launches ended foreign"):
                Explorer().exhaustive(dict(config, handoff=Stubborn))

    def test_the_race_ends_with_two_hosts_that_each_take_launches(self):
        # The README's race, step by step: a launch of A is welcomed on candidate 0 by B's
        # host, which then releases; another launch of A binds 0, finds candidate 1 free and
        # keeps 0; the first reads its welcome, passes 0 over, binds 1 and keeps it (it asks
        # only later candidates). Both are hosts of A; a third launch of A is delivered by
        # the host on 0, its first candidate.
        world = World(_colliding(TWO_APPS, ("A", "A", "A"), hosts=(("B", 0),), ends=1))
        first, second, third = world.clients
        world.client_step(first)  # candidate 0 is held: it connects and sends its preamble
        world.do(("recv", world.conns.index(first.conn)))  # the banner
        world.client_read(first)  # its hello
        world.do(("recv", world.conns.index(first.conn)))  # B's welcome
        world.do(("release", 0))
        self.assertEqual(world.freed, (0,))
        world.client_step(second)  # binds 0
        self.assertIsInstance(second.action, _handoff.Test)
        world.client_step(second)  # candidate 1 is free
        self.assertIsInstance(second.action, _handoff.Keep)
        world.client_step(second)  # keeps 0
        self.assertEqual(world.hosts[1].asked, (1,))
        world.client_read(first)  # B's welcome: it binds 1
        self.assertEqual((first.machine.port, first.held), (1, 2))
        world.client_step(first)  # keeps 1
        self.assertTrue(second.became_host and first.became_host)
        self.assertEqual(world.raced, ((1, 2),))
        while world.steps():
            world.do(world.steps()[0])
        self.assertEqual(third.delivered_by, [1])
        world.check_end()

    def test_a_host_that_welcomes_any_identity_is_caught(self):
        with self.assertRaisesRegex(SimulationFailure, "sent b'arg#.' to a program that is "
                                    "not a host of its identity"):
            Explorer(Impostor).exhaustive(IDENTITY_EXHAUSTIVE[2])

    def test_a_launch_that_trusts_any_identity_is_caught(self):
        config = dict(IDENTITY_EXHAUSTIVE[2], handoff=Trusting)
        with self.assertRaisesRegex(SimulationFailure, "sent b'arg#.' to a program that is "
                                    "not a host of its identity"):
            Explorer().exhaustive(config)

    def test_a_launch_that_keeps_its_port_without_asking_is_caught(self):
        config = dict(IDENTITY_EXHAUSTIVE[2], handoff=Blind)
        with self.assertRaisesRegex(SimulationFailure, "became a second host of its identity")\
                as caught:
            Explorer().exhaustive(config)
        with self.assertRaisesRegex(SimulationFailure, "became a second host"):
            replay(config, caught.exception.schedule)


if __name__ == "__main__":
    unittest.main()
