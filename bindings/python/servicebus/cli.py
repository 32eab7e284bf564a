"""The ``servicebus`` command (also ``python -m servicebus``).

A data-plane tool for scripts and humans, built only on the public asyncio
API (:mod:`servicebus.aio`) and, for ``servicebus emulator``, on
:mod:`servicebus.testing`::

    servicebus emulator [--config FILE] [--amqp-port N] [--amqps-port N] [--control-port N]
    servicebus send QUEUE|TOPIC [--body TEXT | --file F | -] [--count N] [--property k=v ...]
                                [--session-id S] [--schedule ISO]
    servicebus receive ENTITY [--count N] [--peek-lock --complete|--abandon] [--dlq] [--json]
    servicebus peek ENTITY [--from SEQ] [--count N] [--dlq]
    servicebus dlq resubmit ENTITY [--count N]
    servicebus purge ENTITY

ENTITY is a queue, or a subscription as ``TOPIC/Subscriptions/SUB``. The
connection string comes from ``--connection-string`` or
``$SERVICEBUS_CONNECTION_STR``; the tool never guesses one. ``--json``
prints one JSON object per line. Long operations show a progress bar on a
terminal (stderr) and only final counts otherwise.

Exit codes (documented in docs/cli.md): 0 ok, 1 other error, 2 usage
(including a missing or malformed connection string, or an emulator config
the emulator refused), 3 authentication or authorization, 4 entity not found,
130 interrupted, 141 standard output closed early (``| head``).

The file is divided into: output helpers (JSON, progress), argument parsing,
one ``cmd_*`` coroutine per command, and :func:`main`.
"""

import argparse
import asyncio
import base64
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

__all__ = ["main", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_AUTH", "EXIT_NOT_FOUND"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a killed writer

ENV_CONNECTION_STRING = "SERVICEBUS_CONNECTION_STR"
NEXT_SESSION = "*"  # --session-id '*': the next available session
PROG = "servicebus"

#: Broker-set properties that describe why a message was dead-lettered;
#: ``dlq resubmit`` drops them so the resubmitted message is an ordinary one.
DEAD_LETTER_PROPERTIES = ("DeadLetterReason", "DeadLetterErrorDescription")


class UsageError(Exception):
    """A mistake on the command line: exit status 2."""


# -- output -----------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def emit(obj: Dict[str, Any], out: Optional[TextIO] = None) -> None:
    """One JSON object on one line."""
    out = out or sys.stdout
    out.write(json.dumps(obj, default=_json_default, ensure_ascii=False) + "\n")
    out.flush()


def _iso(value: Optional[datetime.datetime]) -> Optional[str]:
    return value.isoformat() if value is not None else None


def body_bytes(message: Any) -> Optional[bytes]:
    """The body as bytes when it is data sections, else None."""
    body = message.body
    if isinstance(body, list) and all(isinstance(b, (bytes, bytearray)) for b in body):
        return b"".join(bytes(b) for b in body)
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    return None


def message_json(message: Any, entity: str) -> Dict[str, Any]:
    """A received or peeked message as a JSON-ready dict. The body is
    ``body`` (UTF-8 text, or the AMQP value) or ``body_base64`` (binary)."""
    props = message.application_properties or {}
    d: Dict[str, Any] = {
        "entity": entity,
        "sequence_number": message.sequence_number,
        "message_id": message.message_id,
        "session_id": message.session_id,
        "correlation_id": message.correlation_id,
        "content_type": message.content_type,
        "subject": message.subject,
        "to": message.to,
        "reply_to": message.reply_to,
        "reply_to_session_id": message.reply_to_session_id,
        "partition_key": message.partition_key,
        "delivery_count": message.delivery_count,
        "enqueued_time_utc": _iso(message.enqueued_time_utc),
        "scheduled_enqueue_time_utc": _iso(message.scheduled_enqueue_time_utc),
        "expires_at_utc": _iso(message.expires_at_utc),
        "time_to_live": message.time_to_live.total_seconds() if message.time_to_live is not None else None,
        "state": message.state.name.lower(),
        "dead_letter_reason": message.dead_letter_reason,
        "dead_letter_error_description": message.dead_letter_error_description,
        "application_properties": {
            (k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)): v for k, v in props.items()
        },
    }
    raw = body_bytes(message)
    if raw is None:
        d["body"] = message.body
    else:
        try:
            d["body"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            d["body_base64"] = base64.b64encode(raw).decode("ascii")
    return d


def message_text(message: Any) -> str:
    """``#<sequence number> <body>`` for people."""
    raw = body_bytes(message)
    body = raw.decode("utf-8", "replace") if raw is not None else repr(message.body)
    return "#%s %s" % (message.sequence_number, body)


class Progress:
    """A progress bar on stderr when it is a terminal; silent otherwise.

    :param total: The expected count, or None for a running count only.
    """

    WIDTH = 30

    def __init__(self, label: str, total: Optional[int], enabled: bool) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.enabled = enabled and sys.stderr.isatty()
        self._started = time.monotonic()
        self._drawn = 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._drawn >= 0.1 or self.done == self.total):
            self._drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self._started, 1e-6)
        if self.total:
            filled = int(self.WIDTH * min(self.done, self.total) / self.total)
            bar = "[%s%s] %d/%d" % ("#" * filled, "." * (self.WIDTH - filled), self.done, self.total)
        else:
            bar = "%d" % self.done
        sys.stderr.write("\r%s %s  %.0f msg/s \x1b[K" % (self.label, bar, rate))
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self._drawn:
            self._draw(time.monotonic())
            sys.stderr.write("\n")
            sys.stderr.flush()


# -- arguments --------------------------------------------------------------


def parse_entity(text: str) -> Tuple[str, Optional[str]]:
    """``QUEUE`` -> (queue, None); ``TOPIC/Subscriptions/SUB`` -> (topic, sub)."""
    parts = text.split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[1].lower() == "subscriptions" and parts[0] and parts[2]:
        return parts[0], parts[2]
    raise UsageError("%r: an entity is QUEUE, TOPIC or TOPIC/Subscriptions/SUBSCRIPTION" % text)


_CASTS: Dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": lambda v: {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}[v.lower()],
}


def parse_property(text: str) -> Tuple[str, Any]:
    """``key=value`` (a string) or ``key:TYPE=value`` with TYPE int, float, bool or str."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError("--property %r: expected KEY=VALUE or KEY:TYPE=VALUE" % text)
    kind = "str"
    if ":" in key:
        key, kind = key.rsplit(":", 1)
    if kind not in _CASTS:
        raise UsageError("--property %r: TYPE is one of %s" % (text, ", ".join(sorted(_CASTS))))
    try:
        return key, _CASTS[kind](value)
    except (KeyError, ValueError):
        raise UsageError("--property %r: %r is not a valid %s" % (text, value, kind)) from None


def parse_time(text: str) -> datetime.datetime:
    """ISO-8601 (``2030-01-01T12:00:00Z``; naive is UTC) or ``+SECONDS`` from now."""
    if text.startswith("+"):
        try:
            return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=float(text[1:]))
        except ValueError:
            raise UsageError("--schedule %r: +SECONDS must be a number" % text) from None
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError("--schedule %r: not an ISO-8601 time (e.g. 2030-01-01T12:00:00Z) or +SECONDS" % text) from None
    return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a whole number" % text) from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return n


def _seconds(text: str) -> float:
    try:
        n = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number of seconds" % text) from None
    if n < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return n


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--connection-string", "-c", metavar="STR",
                        help="the namespace's connection string (default: $%s)" % ENV_CONNECTION_STRING)
    common.add_argument("--json", action="store_true", help="print one JSON object per line")

    parser = argparse.ArgumentParser(prog=PROG, description="Azure Service Bus from the command line (and a local emulator).",
                     epilog="exit codes: 0 ok, 1 error, 2 usage, 3 authentication/authorization, 4 not found. "
                            "ENTITY: QUEUE or TOPIC/Subscriptions/SUB. See docs/cli.md.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("emulator", help="run sbus-emulator in the foreground",
                       description="Runs sbus-emulator in the foreground and prints its connection string. "
                                   "Ctrl-C stops it.")
    p.add_argument("--config", metavar="FILE", help="Config.json (default: queue.1, topic.1/subscription.1)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--amqp-port", type=int, default=5672, metavar="N", help="plain AMQP port (default 5672, 0: free)")
    p.add_argument("--amqps-port", type=int, default=None, metavar="N", help="AMQP over TLS port (default off, 0: free)")
    p.add_argument("--control-port", type=int, default=0, metavar="N",
                   help="HTTP control port (default 0: a free one; -1: off)")
    p.add_argument("--binary", metavar="PATH", help="the sbus-emulator to run (default: see docs/testing.md)")
    p.add_argument("--verbose", "-v", action="count", default=0, help="emulator logs on stderr (repeat for more)")
    p.add_argument("--json", action="store_true", help="print the ready information as one JSON object")

    p = sub.add_parser("send", parents=[common], help="send messages to a queue or topic")
    p.add_argument("entity", metavar="QUEUE|TOPIC")
    p.add_argument("stdin", nargs="?", metavar="-", help="read the body from standard input")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--body", "-b", metavar="TEXT", help="the body (UTF-8)")
    src.add_argument("--file", "-f", metavar="F", help="the body: the bytes of file F")
    p.add_argument("--count", "-n", type=_positive, default=1, metavar="N", help="send N copies (default 1)")
    p.add_argument("--property", "-p", action="append", default=[], metavar="K=V",
                   help="application property; K:int=V, K:float=V, K:bool=V for other types (repeatable)")
    p.add_argument("--session-id", metavar="S")
    p.add_argument("--message-id", metavar="ID")
    p.add_argument("--correlation-id", metavar="ID")
    p.add_argument("--content-type", metavar="TYPE")
    p.add_argument("--subject", metavar="TEXT")
    p.add_argument("--ttl", type=_seconds, metavar="SECONDS", help="time to live")
    p.add_argument("--schedule", metavar="ISO", help="enqueue at this time (ISO-8601, or +SECONDS from now)")

    p = sub.add_parser("receive", parents=[common], help="receive (and remove) messages")
    p.add_argument("entity", metavar="ENTITY")
    p.add_argument("--count", "-n", type=_positive, default=1, metavar="N", help="at most N messages (default 1)")
    p.add_argument("--wait", type=_seconds, default=5.0, metavar="SECONDS",
                   help="how long to wait for the first message (default 5)")
    p.add_argument("--peek-lock", action="store_true", help="lock, then settle as told (default: receive-and-delete)")
    settle = p.add_mutually_exclusive_group()
    settle.add_argument("--complete", action="store_true", help="with --peek-lock: complete each message")
    settle.add_argument("--abandon", action="store_true", help="with --peek-lock: abandon each message")
    settle.add_argument("--dead-letter", action="store_true", help="with --peek-lock: dead-letter each message")
    p.add_argument("--dlq", action="store_true", help="read the dead-letter sub-queue")
    p.add_argument("--session-id", metavar="S",
                   help="the session of a sessionful entity ('*': the next available one)")

    p = sub.add_parser("peek", parents=[common], help="browse messages without removing them")
    p.add_argument("entity", metavar="ENTITY")
    p.add_argument("--from", dest="from_seq", type=int, default=0, metavar="SEQ",
                   help="first sequence number (default: the oldest)")
    p.add_argument("--count", "-n", type=_positive, default=10, metavar="N", help="at most N messages (default 10)")
    p.add_argument("--dlq", action="store_true", help="browse the dead-letter sub-queue")
    p.add_argument("--session-id", metavar="S",
                   help="the session of a sessionful entity ('*': the next available one)")

    p = sub.add_parser("dlq", help="dead-letter queue operations")
    dsub = p.add_subparsers(dest="dlq_command", metavar="ACTION")
    p = dsub.add_parser("resubmit", parents=[common],
                        help="move dead-lettered messages back (keeping their properties)")
    p.add_argument("entity", metavar="ENTITY")
    p.add_argument("--count", "-n", type=_positive, default=None, metavar="N", help="at most N (default: all)")
    p.add_argument("--to", metavar="QUEUE|TOPIC",
                   help="send them here (default: the queue itself, or a subscription's topic)")
    p.add_argument("--wait", type=_seconds, default=2.0, metavar="SECONDS",
                   help="how long an empty dead-letter queue is waited on (default 2)")

    p = sub.add_parser("purge", parents=[common], help="remove every message")
    p.add_argument("entity", metavar="ENTITY")
    p.add_argument("--dlq", action="store_true", help="purge the dead-letter sub-queue")
    p.add_argument("--session-id", metavar="S",
                   help="the session of a sessionful entity ('*': the next available one)")
    p.add_argument("--wait", type=_seconds, default=2.0, metavar="SECONDS",
                   help="how long an empty entity is waited on (default 2)")
    return parser


# -- connection ---------------------------------------------------------------


def connection_string(args: argparse.Namespace) -> str:
    conn = args.connection_string or os.environ.get(ENV_CONNECTION_STRING)
    if conn:
        return conn
    raise UsageError(
        "no connection string. Pass --connection-string 'Endpoint=sb://<namespace>.servicebus.windows.net/;"
        "SharedAccessKeyName=...;SharedAccessKey=...' or set %s (Azure portal: your namespace > Shared access "
        "policies). For a local emulator, run `servicebus emulator`: it prints one." % ENV_CONNECTION_STRING
    )


def _client(args: argparse.Namespace) -> Any:
    from .aio import ServiceBusClient

    return ServiceBusClient.from_connection_string(connection_string(args))


def _receiver(client: Any, entity: str, *, dlq: bool = False, session_id: Optional[str] = None, **kwargs: Any) -> Any:
    from . import SubQueue

    name, sub = parse_entity(entity)
    if dlq:
        kwargs["sub_queue"] = SubQueue.DeadLetter
    if session_id == NEXT_SESSION:
        from . import NEXT_AVAILABLE_SESSION

        kwargs["session_id"] = NEXT_AVAILABLE_SESSION
    elif session_id is not None:
        kwargs["session_id"] = session_id
    if sub is None:
        return client.get_queue_receiver(name, **kwargs)
    return client.get_subscription_receiver(name, sub, **kwargs)


def _sender_entity(entity: str) -> str:
    name, sub = parse_entity(entity)
    if sub is not None:
        raise UsageError("%r: send to the topic, not to one of its subscriptions" % entity)
    return name


def _entity_label(entity: str, dlq: bool) -> str:
    return entity + "/$DeadLetterQueue" if dlq else entity


# -- commands -----------------------------------------------------------------


def _read_body(args: argparse.Namespace) -> Optional[bytes]:
    if args.stdin is not None:
        if args.stdin != "-":
            raise UsageError("unexpected argument %r (use - to read the body from standard input)" % args.stdin)
        if args.body is not None or args.file is not None:
            raise UsageError("give one of --body, --file or - (standard input)")
        return sys.stdin.buffer.read()
    if args.file is not None:
        try:
            with open(args.file, "rb") as f:
                return f.read()
        except OSError as exc:
            raise UsageError("--file %s: %s" % (args.file, exc.strerror or exc)) from None
    if args.body is not None:
        text: str = args.body
        return text.encode("utf-8")
    raise UsageError("no body: give --body TEXT, --file F, or - to read standard input")


async def cmd_send(args: argparse.Namespace) -> int:
    from . import Message
    from .exceptions import MessageContentTooLarge

    entity = _sender_entity(args.entity)
    if args.session_id == NEXT_SESSION:
        raise UsageError("--session-id '*' (the next available session) is for receiving; name the session")
    body = _read_body(args)
    properties: Dict[Any, Any] = dict(parse_property(p) for p in args.property)
    when = parse_time(args.schedule) if args.schedule else None

    def make() -> Any:
        return Message(
            body,
            application_properties=properties or None,
            session_id=args.session_id,
            message_id=args.message_id,
            correlation_id=args.correlation_id,
            content_type=args.content_type,
            subject=args.subject,
            time_to_live=datetime.timedelta(seconds=args.ttl) if args.ttl is not None else None,
        )

    progress = Progress("send %s" % entity, args.count, enabled=args.count >= 100)
    sequence_numbers: List[int] = []
    async with _client(args) as client:
        async with client.get_queue_sender(entity) as sender:
            left = args.count
            while left > 0:
                if when is not None:
                    chunk = [make() for _ in range(min(left, 100))]
                    sequence_numbers += await sender.schedule_messages(chunk, when)
                    n = len(chunk)
                elif left == 1:
                    await sender.send_messages(make())
                    n = 1
                else:
                    batch = await sender.create_batch()
                    n = 0
                    while n < left:
                        try:
                            batch.add(make())
                        except MessageContentTooLarge:
                            if n == 0:
                                raise
                            break
                        n += 1
                    await sender.send_messages(batch)
                left -= n
                progress.update(n)
    progress.close()
    result: Dict[str, Any] = {"entity": entity, "sent": args.count}
    if when is not None:
        result["scheduled_enqueue_time_utc"] = when.isoformat()
        result["sequence_numbers"] = sequence_numbers
    if args.json:
        emit(result)
    elif when is not None:
        print("scheduled %d message(s) on %s for %s: sequence number(s) %s"
              % (args.count, entity, when.isoformat(), " ".join(map(str, sequence_numbers))))
    else:
        print("sent %d message(s) to %s" % (args.count, entity))
    return EXIT_OK


async def cmd_receive(args: argparse.Namespace) -> int:
    from . import ReceiveMode

    settle = "complete" if args.complete else "abandon" if args.abandon else "dead_letter" if args.dead_letter else None
    if settle and not args.peek_lock:
        raise UsageError("--complete, --abandon and --dead-letter go with --peek-lock")
    if args.peek_lock and not settle:
        raise UsageError("--peek-lock needs --complete, --abandon or --dead-letter (what to do with each message)")
    parse_entity(args.entity)
    mode = ReceiveMode.PeekLock if args.peek_lock else ReceiveMode.ReceiveAndDelete
    label = _entity_label(args.entity, args.dlq)
    progress = Progress("receive %s" % label, args.count, enabled=args.count >= 100)
    got = 0
    async with _client(args) as client:
        receiver = _receiver(client, args.entity, dlq=args.dlq, session_id=args.session_id, receive_mode=mode,
                             max_wait_time=args.wait or None)
        if not await _open_session(receiver):
            return _nothing(args, label)
        async with receiver:
            while got < args.count:
                # --wait 0 waits for the first message forever; later ones only briefly
                wait = (args.wait or None) if got == 0 else min(args.wait or 1.0, 1.0)
                batch = await receiver.receive_messages(max_message_count=min(args.count - got, 100),
                                                        max_wait_time=wait)
                if not batch:
                    break
                for i, message in enumerate(batch):
                    try:
                        _print_received(message, label, settle, args.json)
                    except BaseException:
                        if settle:  # unlock what was not written out, rather than hold it until the lock expires
                            await _abandon_quietly(receiver, batch[i:])
                        raise
                    if settle == "complete":
                        await receiver.complete_message(message)
                    elif settle == "abandon":
                        await receiver.abandon_message(message)
                    elif settle == "dead_letter":
                        await receiver.dead_letter_message(message, reason="servicebus-cli",
                                                           error_description="dead-lettered with servicebus receive")
                got += len(batch)
                progress.update(len(batch))
    progress.close()
    if not got:
        return _nothing(args, label)
    return EXIT_OK


def _nothing(args: argparse.Namespace, label: str) -> int:
    if not args.json:
        print("no message on %s within %g s" % (label, args.wait), file=sys.stderr)
    return EXIT_OK


async def _open_session(receiver: Any) -> bool:
    """Opens ``receiver``; False if it waits for a next available session
    and none comes (an empty sessionful entity), not an error here."""
    from .exceptions import NoActiveSession

    try:
        await receiver.__aenter__()
    except NoActiveSession:
        await receiver.close()
        return False
    return True


def _print_received(message: Any, label: str, settle: Optional[str], as_json: bool) -> None:
    if as_json:
        d = message_json(message, label)
        if settle:
            d["settlement"] = settle
        emit(d)
    else:
        print(message_text(message), flush=True)


async def _abandon_quietly(receiver: Any, messages: List[Any]) -> None:
    for message in messages:
        try:
            await receiver.abandon_message(message)
        except Exception:  # best effort: the lock expires anyway
            pass


async def cmd_peek(args: argparse.Namespace) -> int:
    parse_entity(args.entity)
    label = _entity_label(args.entity, args.dlq)
    seen = 0
    next_seq = args.from_seq
    async with _client(args) as client:
        receiver = _receiver(client, args.entity, dlq=args.dlq, session_id=args.session_id, max_wait_time=2)
        if not await _open_session(receiver):
            print("no session with messages on %s" % label, file=sys.stderr)
            return EXIT_OK
        async with receiver:
            while seen < args.count:
                batch = await receiver.peek_messages(max_message_count=min(args.count - seen, 100),
                                                     sequence_number=next_seq)
                if not batch:
                    break
                for message in batch:
                    if args.json:
                        emit(message_json(message, label))
                    else:
                        print(message_text(message), flush=True)
                seen += len(batch)
                next_seq = batch[-1].sequence_number + 1
    if not seen and not args.json:
        print("no message on %s" % label, file=sys.stderr)
    return EXIT_OK


def resubmittable(message: Any) -> Any:
    """A new Message with the content and properties of a dead-lettered
    one, minus the broker's dead-letter properties."""
    from . import Message

    props = {
        k: v for k, v in (message.application_properties or {}).items()
        if (k.decode("utf-8", "replace") if isinstance(k, bytes) else k) not in DEAD_LETTER_PROPERTIES
    }
    return Message(
        message.body,
        application_properties=props or None,
        session_id=message.session_id,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        content_type=message.content_type,
        subject=message.subject,
        to=message.to,
        reply_to=message.reply_to,
        reply_to_session_id=message.reply_to_session_id,
        partition_key=message.partition_key,
        time_to_live=message.time_to_live,
    )


async def cmd_dlq_resubmit(args: argparse.Namespace) -> int:
    from . import ReceiveMode

    name, sub = parse_entity(args.entity)
    target = _sender_entity(args.to) if args.to else name
    progress = Progress("resubmit %s -> %s" % (args.entity, target), args.count, enabled=True)
    moved = 0
    async with _client(args) as client:
        async with _receiver(client, args.entity, dlq=True, receive_mode=ReceiveMode.PeekLock) as receiver, \
                client.get_queue_sender(target) as sender:
            while args.count is None or moved < args.count:
                want = 100 if args.count is None else min(args.count - moved, 100)
                batch = await receiver.receive_messages(max_message_count=want, max_wait_time=args.wait or None)
                if not batch:
                    break
                for message in batch:
                    # one at a time: a message is completed only once its copy is accepted
                    await sender.send_messages(resubmittable(message))
                    await receiver.complete_message(message)
                    moved += 1
                    progress.update(1)
                    if args.json:
                        emit({"entity": args.entity, "to": target, "sequence_number": message.sequence_number,
                              "message_id": message.message_id, "dead_letter_reason": message.dead_letter_reason})
    progress.close()
    if not args.json:
        print("resubmitted %d message(s) from %s to %s" % (moved, _entity_label(args.entity, True), target))
    return EXIT_OK


async def cmd_purge(args: argparse.Namespace) -> int:
    from . import ReceiveMode

    parse_entity(args.entity)
    label = _entity_label(args.entity, args.dlq)
    progress = Progress("purge %s" % label, None, enabled=True)
    removed = 0
    async with _client(args) as client:
        while True:  # once, or once per session with --session-id '*'
            receiver = _receiver(client, args.entity, dlq=args.dlq, session_id=args.session_id,
                                 receive_mode=ReceiveMode.ReceiveAndDelete, prefetch_count=100,
                                 max_wait_time=args.wait or None)
            if not await _open_session(receiver):
                break
            async with receiver:
                first = True
                while True:
                    batch = await receiver.receive_messages(max_message_count=100,
                                                            max_wait_time=(args.wait if first else 0.5) or None)
                    if not batch:
                        break
                    first = False
                    removed += len(batch)
                    progress.update(len(batch))
            if args.session_id != NEXT_SESSION or first:
                break
    progress.close()
    if args.json:
        emit({"entity": label, "purged": removed})
    else:
        print("purged %d message(s) from %s" % (removed, label))
    return EXIT_OK


def cmd_emulator(args: argparse.Namespace) -> int:
    """Runs sbus-emulator in the foreground; its logs go to our stderr."""
    from .testing import DEFAULT_CONFIG, EmulatorNotFoundError, find_emulator

    try:
        binary = find_emulator(args.binary)
    except EmulatorNotFoundError as exc:
        print("%s: %s" % (PROG, exc), file=sys.stderr)
        return EXIT_ERROR
    with tempfile.TemporaryDirectory(prefix="servicebus-emulator-") as tmp:
        config = args.config
        if config is None:
            config = os.path.join(tmp, "config.json")
            with open(config, "w", encoding="utf-8") as f:
                json.dump(DEFAULT_CONFIG, f)
        argv = [binary, "--config", config, "--host", args.host, "--amqp-port", str(args.amqp_port)]
        if args.amqps_port is not None:
            argv += ["--amqps-port", str(args.amqps_port)]
        if args.control_port >= 0:
            argv += ["--control-port", str(args.control_port)]
        # stdin is a pipe only we hold: if this process dies, even by SIGKILL, the emulator follows
        argv += ["--verbose"] * args.verbose + ["--exit-on-stdin-eof"]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None

        def forward(signum: int, frame: Any) -> None:
            proc.send_signal(signum)

        previous = signal.signal(signal.SIGTERM, forward)
        # A shell starts background jobs with SIGINT ignored, and Python then
        # never raises KeyboardInterrupt: say explicitly that Ctrl-C stops us.
        previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            line = proc.stdout.readline().strip()
            if line.startswith("sbus-emulator ready"):
                _announce(line, args)
                for extra in proc.stdout:  # the emulator prints only its ready line; pass anything else on
                    sys.stdout.write(extra)
            return _exit_status(proc.wait())
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return EXIT_OK
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
            if proc.stdin is not None:
                proc.stdin.close()


def _exit_status(rc: int) -> int:
    if rc == 2:
        return EXIT_USAGE  # invalid config: the emulator said why on stderr
    if rc < 0 and -rc in (signal.SIGINT, signal.SIGTERM):
        return EXIT_OK
    return EXIT_OK if rc == 0 else EXIT_ERROR


def _announce(line: str, args: argparse.Namespace) -> None:
    fields = dict(part.split("=", 1) for part in line.split()[2:] if "=" in part)
    info: Dict[str, Any] = {"ready": True}
    if "amqp" in fields:
        port = int(fields["amqp"].rsplit(":", 1)[1])
        host = "localhost" if args.host in ("127.0.0.1", "localhost") else args.host
        info["connection_string"] = (
            "Endpoint=sb://%s:%d;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;"
            "UseDevelopmentEmulator=true;" % (host, port))
        info["amqp"] = fields["amqp"]
    for key in ("amqps", "control", "ca"):
        if key in fields:
            info[key] = fields[key]
    if args.json:
        emit(info)
        return
    print("sbus-emulator is running (Ctrl-C stops it)")
    if "connection_string" in info:
        print("  %s='%s'" % (ENV_CONNECTION_STRING, info["connection_string"]))
    if "amqps" in info:
        print("  AMQP over TLS: %s (CA: %s)" % (info["amqps"], info.get("ca")))
    if "control" in info:
        print("  control:       http://%s (GET /entities, POST /clock, ...)" % info["control"])
    sys.stdout.flush()


# -- main -------------------------------------------------------------------


def _error_code(exc: BaseException) -> int:
    from . import exceptions as e

    if isinstance(exc, (e.ServiceBusAuthenticationError, e.ServiceBusAuthorizationError)):
        return EXIT_AUTH
    if isinstance(exc, e.ServiceBusResourceNotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, e.ServiceBusConnectionStringError):
        return EXIT_USAGE
    return EXIT_ERROR


COMMANDS = {
    "send": cmd_send,
    "receive": cmd_receive,
    "peek": cmd_peek,
    "purge": cmd_purge,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print("servicebus %s" % __version__)
        return EXIT_OK
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "emulator":
        return cmd_emulator(args)
    if args.command == "dlq":
        if args.dlq_command != "resubmit":
            parser.parse_args(["dlq", "--help"])
        command = cmd_dlq_resubmit
    else:
        command = COMMANDS[args.command]
    try:
        return asyncio.run(command(args))
    except UsageError as exc:
        print("%s: error: %s" % (PROG, exc), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("%s: interrupted" % PROG, file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, as `cat` does; Python
        # would otherwise complain again when it flushes stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        from .exceptions import ServiceBusError

        if isinstance(exc, ServiceBusError):
            print("%s: %s: %s" % (PROG, type(exc).__name__, exc), file=sys.stderr)
            if exc.condition == "amqp:not-allowed" and "session" in str(exc).lower():
                print("%s: hint: the entity requires sessions: pass --session-id S "
                      "(receive, peek and purge also take '*', the next available session)" % PROG, file=sys.stderr)
            return _error_code(exc)
        if isinstance(exc, OSError):
            print("%s: %s" % (PROG, exc), file=sys.stderr)
            return EXIT_ERROR
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
