"""Every public name has a docstring and type hints; reprs never show secrets."""

import inspect

import pytest

import servicebus
import servicebus.aio
import servicebus.amqp
from servicebus import ServiceBusSharedKeyCredential
from servicebus.aio import ServiceBusClient

PUBLIC = [getattr(servicebus, n) for n in servicebus.__all__ if n != "exceptions"] + [
    getattr(servicebus.aio, n) for n in servicebus.aio.__all__
] + [
    getattr(servicebus.amqp, n) for n in servicebus.amqp.__all__
]


def _members(obj):  # type: ignore[no-untyped-def]
    if not inspect.isclass(obj):
        return []
    out = []
    for name, member in inspect.getmembers(obj):
        if name.startswith("_") and name not in ("__init__",):
            continue
        if inspect.isfunction(member) or isinstance(inspect.getattr_static(obj, name, None), property):
            out.append((name, member))
    return out


@pytest.mark.parametrize("obj", [o for o in PUBLIC if inspect.isclass(o)], ids=lambda o: o.__name__)
def test_docstrings(obj) -> None:  # type: ignore[no-untyped-def]
    assert obj.__doc__ and obj.__doc__.strip(), obj
    for name, member in _members(obj):
        doc = inspect.getdoc(getattr(obj, name)) if name != "__init__" else obj.__doc__
        assert doc, "%s.%s has no docstring" % (obj.__name__, name)


@pytest.mark.parametrize("obj", [o for o in PUBLIC if inspect.isclass(o)], ids=lambda o: o.__name__)
def test_type_hints_on_methods(obj) -> None:  # type: ignore[no-untyped-def]
    for name, member in _members(obj):
        if inspect.isfunction(member) and member.__module__.startswith("servicebus"):
            assert "return" in member.__annotations__, "%s.%s lacks a return annotation" % (obj.__name__, name)


def test_py_typed_is_installed() -> None:
    import os

    assert os.path.exists(os.path.join(os.path.dirname(servicebus.__file__), "py.typed"))


def test_reprs_hide_keys() -> None:
    cs = "Endpoint=sb://localhost:1;SharedAccessKeyName=Root;SharedAccessKey=TOPSECRET;UseDevelopmentEmulator=true"
    client = ServiceBusClient.from_connection_string(cs)
    sender = client.get_queue_sender("q")
    receiver = client.get_queue_receiver("q")
    for obj in (client, sender, receiver, ServiceBusSharedKeyCredential("Root", "TOPSECRET")):
        assert "TOPSECRET" not in repr(obj)
    client._closed = True  # never opened: nothing to warn about
    sender._closed = receiver._closed = True
