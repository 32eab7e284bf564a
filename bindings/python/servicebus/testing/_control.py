"""The emulator's HTTP control surface, as a sync and an async client.

``sbus-emulator --control-port N`` answers one JSON request per connection
(docs/emulator.md, "Control surface"): health, entity counters, the clock,
fault injection, and entities created or deleted at run time. This module
holds one description of those requests (:class:`_ControlRequests`) and two
transports under it: :class:`Control` does blocking socket I/O for sync code
and fixtures, :class:`AsyncControl` uses asyncio streams so that a test
running on an event loop never blocks it. Both expose the same methods; the
async one's return awaitables.

Entity properties are taken either in Microsoft's spelling
(``LockDuration="PT5S"``) or in Python's (``lock_duration=5``); durations may
be seconds, a ``timedelta`` or an ISO-8601 string.
"""

import asyncio
import datetime
import json
import socket
import uuid
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union
from urllib.parse import quote

from ._errors import ControlError

__all__ = ["Control", "AsyncControl", "entity_properties", "unique_name"]

Duration = Union[int, float, datetime.timedelta, str]

#: snake_case keyword -> Microsoft's property name, and whether it is a duration.
_PROPERTIES: Dict[str, Tuple[str, bool]] = {
    "lock_duration": ("LockDuration", True),
    "max_delivery_count": ("MaxDeliveryCount", False),
    "requires_session": ("RequiresSession", False),
    "default_message_time_to_live": ("DefaultMessageTimeToLive", True),
    "dead_lettering_on_message_expiration": ("DeadLetteringOnMessageExpiration", False),
    "requires_duplicate_detection": ("RequiresDuplicateDetection", False),
    "duplicate_detection_history_time_window": ("DuplicateDetectionHistoryTimeWindow", True),
    "forward_to": ("ForwardTo", False),
    "forward_dead_lettered_messages_to": ("ForwardDeadLetteredMessagesTo", False),
}
_DURATIONS = {camel for camel, is_duration in _PROPERTIES.values() if is_duration}


def iso_duration(value: Duration) -> str:
    """Seconds, a timedelta or an ISO-8601 string -> an ISO-8601 duration."""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("a duration is seconds, a timedelta or an ISO-8601 string, not %r" % (value,))
    if value < 0:
        raise ValueError("a duration cannot be negative: %r" % (value,))
    if float(value).is_integer():
        return "PT%dS" % int(value)
    return "PT%.3fS" % value


def entity_properties(properties: Dict[str, Any]) -> Dict[str, Any]:
    """Keyword properties -> Microsoft's ``Properties`` object.

    Keys are snake_case names of :data:`_PROPERTIES` or Microsoft's own
    names; durations are converted to ISO-8601. Unknown snake_case names raise
    TypeError here; unknown CamelCase names are left to the emulator, which
    refuses them with a clear message.
    """
    out: Dict[str, Any] = {}
    for key, value in properties.items():
        if key in _PROPERTIES:
            camel, is_duration = _PROPERTIES[key]
        elif key[:1].isupper():
            camel, is_duration = key, key in _DURATIONS
        else:
            raise TypeError(
                "unknown entity property %r (known: %s)" % (key, ", ".join(sorted(_PROPERTIES)))
            )
        out[camel] = iso_duration(value) if is_duration and value is not None else value
    return out


def unique_name(prefix: str = "entity") -> str:
    """``<prefix>-<12 hex digits>``: a name no other test uses."""
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def _subscription_json(sub: Union[str, Dict[str, Any]]) -> Dict[str, Any]:
    if isinstance(sub, str):
        return {"Name": sub}
    return dict(sub)


def _rules(sql_filter: Optional[str], correlation_filter: Optional[Dict[str, Any]],
           rules: Optional[Iterable[Dict[str, Any]]]) -> Optional[List[Dict[str, Any]]]:
    out = list(rules) if rules is not None else []
    if sql_filter is not None:
        out.append({"Name": "$Default", "Properties": {"FilterType": "Sql", "SqlFilter": {"SqlExpression": sql_filter}}})
    if correlation_filter is not None:
        out.append(
            {"Name": "$Default" if sql_filter is None else "correlation",
             "Properties": {"FilterType": "Correlation", "CorrelationFilter": dict(correlation_filter)}}
        )
    return out or None


class _Request:
    """One control request and how to turn its answer into a result."""

    __slots__ = ("method", "path", "body", "result")

    def __init__(self, method: str, path: str, body: Optional[Dict[str, Any]] = None,
                 result: Optional[Callable[[Any], Any]] = None) -> None:
        self.method = method
        self.path = path
        self.body = body
        self.result = result or (lambda answer: answer)

    def encode(self, host: str) -> bytes:
        data = json.dumps(self.body).encode() if self.body is not None else b""
        head = (
            "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\nConnection: close\r\n\r\n" % (self.method, self.path, host, len(data))
        )
        return head.encode("ascii") + data

    def decode(self, raw: bytes) -> Any:
        head, _, payload = raw.partition(b"\r\n\r\n")
        try:
            status = int(head.split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise ControlError(0, "malformed answer from the control port: %r" % raw[:200], self.method, self.path)
        try:
            answer: Any = json.loads(payload) if payload.strip() else None
        except ValueError:
            answer = payload.decode("utf-8", "replace")
        if status >= 300:
            message = answer.get("error") if isinstance(answer, dict) else answer
            raise ControlError(status, str(message or "HTTP %d" % status), self.method, self.path)
        return self.result(answer)


class _ControlRequests:
    """The control surface's operations, independent of the transport.

    Every public method builds a request and hands it to ``_call``, which
    :class:`Control` runs at once and :class:`AsyncControl` returns as a
    coroutine.
    """

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        host, _, port = address.rpartition(":")
        self.address = address
        self._host = host.strip("[]")
        self._port = int(port)
        self.timeout = timeout

    def __repr__(self) -> str:
        return "%s(%r)" % (type(self).__name__, self.address)

    def _call(self, request: _Request) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- state ------------------------------------------------------------

    def health(self) -> Any:
        """``GET /health``: ``{"status": "healthy"}``."""
        return self._call(_Request("GET", "/health"))

    def entities(self) -> Any:
        """``GET /entities``: ``{path: {"kind", "active", "scheduled", "deferred",
        "dead_lettered", "locked", "total"}}`` for every queue, topic and subscription."""
        return self._call(_Request("GET", "/entities"))

    def counts(self, path: str) -> Any:
        """The counters of one entity (``queue`` or ``topic/Subscriptions/sub``,
        case-insensitive). Raises :class:`ControlError` (404) if it does not exist."""

        def pick(answer: Dict[str, Any]) -> Dict[str, Any]:
            for name, value in answer.items():
                if name.lower() == path.lower():
                    return value
            raise ControlError(404, "no such entity: %r" % path, "GET", "/entities")

        return self._call(_Request("GET", "/entities", result=pick))

    # -- time -------------------------------------------------------------

    def clock(self) -> Any:
        """``GET /clock``: ``{"skew_ms", "now_ms"}`` (the emulator's clock, Unix ms)."""
        return self._call(_Request("GET", "/clock"))

    def advance(self, seconds: Union[int, float, datetime.timedelta]) -> Any:
        """Moves the emulator clock forward: due locks expire, scheduled
        messages activate, TTLs apply. Returns the new ``{"skew_ms", "now_ms"}``."""
        if isinstance(seconds, datetime.timedelta):
            seconds = seconds.total_seconds()
        if seconds < 0:
            raise ValueError("the emulator clock only moves forward")
        return self._call(_Request("POST", "/clock", {"advance_ms": int(round(seconds * 1000))}))

    # -- faults -----------------------------------------------------------

    def faults(self, **body: Any) -> Any:
        """``POST /faults`` with these keys (see docs/emulator.md); returns the fault state."""
        return self._call(_Request("POST", "/faults", body))

    def drop_connections(self) -> Any:
        """Closes every AMQP connection with ``amqp:connection:forced``."""
        return self.faults(drop_connections=True)

    def detach(self, entity: str, condition: str = "amqp:link:detach-forced") -> Any:
        """Detaches every link on ``entity`` with ``condition``."""
        return self.faults(detach=entity, condition=condition)

    def fail_next(self, count: int, op: str, condition: str = "com.microsoft:server-busy") -> Any:
        """Makes the next ``count`` operations of kind ``op`` (send, receive,
        settle, mgmt, cbs) fail with ``condition``."""
        return self.faults(fail_next=count, op=op, condition=condition)

    def delay_dispositions(self, milliseconds: int) -> Any:
        """Sends settlement replies ``milliseconds`` late (0 = off)."""
        return self.faults(delay_dispositions_ms=milliseconds)

    def reset_faults(self) -> Any:
        """Clears fail_next and delays."""
        return self.faults(reset=True)

    # -- entities ---------------------------------------------------------

    def create_queue(self, name: Optional[str] = None, **properties: Any) -> Any:
        """Creates a queue; returns its name (``queue-<hex>`` when ``name`` is None).

        :param properties: ``lock_duration=5``, ``requires_session=True``,
            ``max_delivery_count=3``, … or Microsoft's names (``LockDuration="PT5S"``).
        :raises ControlError: 409 if it exists, 400 for a bad property.
        """
        name = name or unique_name("queue")
        body = {"Queue": {"Name": name, "Properties": entity_properties(properties)}}
        return self._call(_Request("POST", "/entities", body, result=lambda _: name))

    def create_topic(self, name: Optional[str] = None,
                     subscriptions: Iterable[Union[str, Dict[str, Any]]] = (), **properties: Any) -> Any:
        """Creates a topic, with ``subscriptions`` (names, or Microsoft's
        subscription objects with ``Rules``); returns its name."""
        name = name or unique_name("topic")
        body = {
            "Topic": {
                "Name": name,
                "Properties": entity_properties(properties),
                "Subscriptions": [_subscription_json(s) for s in subscriptions],
            }
        }
        return self._call(_Request("POST", "/entities", body, result=lambda _: name))

    def create_subscription(self, topic: str, name: Optional[str] = None, *, sql_filter: Optional[str] = None,
                            correlation_filter: Optional[Dict[str, Any]] = None,
                            rules: Optional[Iterable[Dict[str, Any]]] = None, **properties: Any) -> Any:
        """Adds a subscription to ``topic``; returns its name.

        :param sql_filter: e.g. ``"color = 'red'"`` (the ``$Default`` rule).
        :param correlation_filter: e.g. ``{"ContentType": "application/json"}``.
        :param rules: Microsoft's ``Rules`` objects, as they are.
        :raises ControlError: 404 if the topic does not exist, 409 if the subscription does.
        """
        name = name or unique_name("sub")
        sub: Dict[str, Any] = {"Name": name, "Properties": entity_properties(properties)}
        made_rules = _rules(sql_filter, correlation_filter, rules)
        if made_rules is not None:
            sub["Rules"] = made_rules
        body = {"Subscription": sub, "TopicName": topic}
        return self._call(_Request("POST", "/entities", body, result=lambda _: name))

    def delete(self, path: str, missing_ok: bool = False) -> Any:
        """Deletes a queue, a topic (with its subscriptions) or a subscription
        (``topic/Subscriptions/sub``); its links are detached with ``amqp:not-found``.

        :param missing_ok: return False instead of raising when it does not exist.
        """
        def result(_: Any) -> bool:
            return True

        request = _Request("DELETE", "/entities/" + quote(path, safe=""), result=result)
        if not missing_ok:
            return self._call(request)
        return self._call_missing_ok(request)

    def _call_missing_ok(self, request: _Request) -> Any:  # pragma: no cover - per transport
        raise NotImplementedError


class Control(_ControlRequests):
    """The control surface for synchronous code (fixtures, scripts).

    Each call opens one loopback TCP connection and blocks until the answer;
    in a coroutine use :class:`AsyncControl` (``emulator.aio``) instead.
    """

    def _call(self, request: _Request) -> Any:
        try:
            with socket.create_connection((self._host, self._port), timeout=self.timeout) as sock:
                sock.sendall(request.encode(self._host))
                chunks = []
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        except OSError as exc:
            raise ControlError(0, "control port %s: %s" % (self.address, exc), request.method, request.path) from exc
        return request.decode(b"".join(chunks))

    def _call_missing_ok(self, request: _Request) -> Any:
        try:
            return self._call(request)
        except ControlError as exc:
            if exc.status == 404:
                return False
            raise


class AsyncControl(_ControlRequests):
    """The control surface for coroutines: the same methods as
    :class:`Control`, each returning an awaitable (asyncio streams, so the
    event loop is never blocked)."""

    async def _call(self, request: _Request) -> Any:  # type: ignore[override]
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self._host, self._port), self.timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise ControlError(0, "control port %s: %s" % (self.address, exc or "timeout"),
                               request.method, request.path) from exc
        try:
            writer.write(request.encode(self._host))
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), self.timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise ControlError(0, "control port %s: %s" % (self.address, exc or "timeout"),
                               request.method, request.path) from exc
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
        return request.decode(raw)

    async def _call_missing_ok(self, request: _Request) -> Any:  # type: ignore[override]
        try:
            return await self._call(request)
        except ControlError as exc:
            if exc.status == 404:
                return False
            raise
