"""AMQP message bodies beyond data sections, as azure-servicebus 7.x exposes them.

``AmqpAnnotatedMessage(sequence_body=...)`` / ``(value_body=...)`` /
``(data_body=...)`` builds a message with that body; send it with
``sender.send_messages`` (alone, in a list, or added to a batch) like any
message. Every message has ``body_type`` (an :class:`AmqpMessageBodyType`);
a received amqp-sequence body reads as a list with one list per section,
an amqp-value body as the value itself.

AMQP values map to Python as in azure-servicebus: list and map to ``list``
and ``dict`` (both ways), decimal32/64/128 to :class:`decimal.Decimal`
(a Decimal is sent as decimal128), and on receive char to a one-character
``str``, array to ``list``, a described value to a ``(descriptor, value)``
tuple, and a list or map used as a map key to a ``tuple`` / ``frozenset``.
"""

import enum
from typing import Any, Dict, List, Optional, Union

from . import _sbus

__all__ = ["AmqpAnnotatedMessage", "AmqpMessageBodyType"]


class AmqpMessageBodyType(str, enum.Enum):
    """The body type of an AMQP message: data sections, amqp-sequence
    sections or one amqp-value section."""

    DATA = "data"
    SEQUENCE = "sequence"
    VALUE = "value"


#: engine body kind (``_sbus.BODY_*``) -> AmqpMessageBodyType
BODY_TYPES = {
    _sbus.BODY_DATA: AmqpMessageBodyType.DATA,
    _sbus.BODY_SEQUENCE: AmqpMessageBodyType.SEQUENCE,
    _sbus.BODY_VALUE: AmqpMessageBodyType.VALUE,
}

class _Unset:
    """The default of the body keywords: not given (None is a valid value body)."""

    def __repr__(self) -> str:
        return "<not given>"


_UNSET: Any = _Unset()
_NOT_CARRIED = ("header", "footer", "properties", "annotations", "delivery_annotations")


class AmqpAnnotatedMessage(_sbus.Message):
    """An AMQP message built from its body section(s), for advanced sending
    scenarios. Exactly one of ``data_body``, ``sequence_body`` or
    ``value_body`` must be given, else ``ValueError``.

    :keyword data_body: One or more data sections: ``str``, ``bytes`` or a list of them.
    :keyword sequence_body: amqp-sequence sections: a list of lists (one section
        each), or one list (one section).
    :keyword value_body: One amqp-value section holding any supported value
        (None, bool, int, float, str, bytes, datetime, UUID, Decimal, or lists and dicts of them).
    :keyword dict application_properties: User properties.
    :keyword encoding: Encoding of ``str`` data sections. Default UTF-8.

    The AMQP header, footer, properties and (delivery) annotations of
    azure-servicebus are not carried by this client: giving one that is not
    None raises ``TypeError``; set the Service Bus properties on a
    :class:`servicebus.ServiceBusMessage` instead.
    """

    __slots__ = ()

    def __init__(
        self,
        *,
        data_body: Any = _UNSET,
        sequence_body: Any = _UNSET,
        value_body: Any = _UNSET,
        application_properties: Optional[Dict[Union[str, bytes], Any]] = None,
        encoding: str = "UTF-8",
        **kwargs: Any
    ) -> None:
        for name in _NOT_CARRIED:
            if kwargs.pop(name, None) is not None:
                raise TypeError("AmqpAnnotatedMessage(%s=...) is not supported by this client" % name)
        if kwargs:
            raise TypeError("unexpected keyword argument(s): %s" % ", ".join(sorted(kwargs)))
        if [data_body, sequence_body, value_body].count(_UNSET) != 2:
            raise ValueError(
                "There should be one and only one of either data_body, sequence_body "
                "or value_body being set as the body of the AmqpAnnotatedMessage."
            )
        if data_body is not _UNSET:
            if isinstance(data_body, str):
                data_body = data_body.encode(encoding)
            elif isinstance(data_body, list):
                data_body = [d.encode(encoding) if isinstance(d, str) else d for d in data_body]
            if not isinstance(data_body, (bytes, bytearray, memoryview, list)):
                raise TypeError("data_body must be str or bytes or a list of str or bytes")
            self.body = data_body
        elif sequence_body is not _UNSET:
            if not isinstance(sequence_body, list):
                raise TypeError("sequence_body must be a list or a list of lists")
            self._set_body_sequence(sequence_sections(sequence_body))
        else:
            self._set_body_value(value_body)
        if application_properties is not None:
            self.application_properties = application_properties

    @property
    def body_type(self) -> AmqpMessageBodyType:
        """The body type: DATA, SEQUENCE or VALUE."""
        return BODY_TYPES[self._body_kind]

    def __repr__(self) -> str:
        return "AmqpAnnotatedMessage(body_type=%s, body=%r)" % (self.body_type.value, self.body)


def sequence_sections(body: List[Any]) -> List[List[Any]]:
    """The amqp-sequence sections of ``sequence_body`` (a list of lists, or one list)."""
    if body and all(isinstance(s, list) for s in body):
        return body
    return [body]
