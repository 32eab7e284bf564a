"""servicebus.testing's control-surface helpers without an emulator: property
names, durations, names, and how answers and refusals are read."""

import datetime

import pytest

from servicebus.testing import ControlError, unique_name
from servicebus.testing._control import Control, _Request, entity_properties, iso_duration
from servicebus.testing._emulator import _root_policy, _strip_json_comments


def test_durations():
    assert iso_duration(5) == "PT5S"
    assert iso_duration(0.25) == "PT0.250S"
    assert iso_duration(datetime.timedelta(minutes=2)) == "PT120S"
    assert iso_duration("P1D") == "P1D"
    with pytest.raises(ValueError):
        iso_duration(-1)
    with pytest.raises(TypeError):
        iso_duration(True)


def test_entity_properties_accept_both_spellings():
    assert entity_properties({"lock_duration": 5, "requires_session": True, "MaxDeliveryCount": 3,
                              "DefaultMessageTimeToLive": 60, "forward_to": "other"}) == {
        "LockDuration": "PT5S", "RequiresSession": True, "MaxDeliveryCount": 3,
        "DefaultMessageTimeToLive": "PT60S", "ForwardTo": "other"}
    with pytest.raises(TypeError, match="known: .*lock_duration"):
        entity_properties({"lockduration": 5})


def test_unique_names():
    names = {unique_name("q") for _ in range(1000)}
    assert len(names) == 1000 and all(n.startswith("q-") and len(n) == 14 for n in names)


def test_answers_and_refusals():
    r = _Request("POST", "/entities", {"Queue": {"Name": "x"}}, result=lambda _: "x")
    wire = r.encode("127.0.0.1")
    assert wire.startswith(b"POST /entities HTTP/1.1\r\n") and wire.endswith(b'{"Queue": {"Name": "x"}}')
    assert b"Content-Length: 24\r\n" in wire
    assert r.decode(b"HTTP/1.1 201 Created\r\nContent-Length: 16\r\n\r\n{\"created\":true}") == "x"
    with pytest.raises(ControlError) as err:
        r.decode(b"HTTP/1.1 409 Conflict\r\n\r\n{\"error\":\"Queue: an entity named 'x' already exists\"}")
    assert err.value.status == 409 and "already exists" in err.value.reason and "POST /entities" in str(err.value)
    with pytest.raises(ControlError, match="malformed"):
        r.decode(b"garbage")


def test_unreachable_control_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ControlError) as err:
        Control("127.0.0.1:%d" % port).health()
    assert err.value.status == 0 and "control port" in str(err.value)


def test_config_comments_and_policies():
    text = '{"a": "// not a comment", /* block */ "b": 1 // line\n}'
    assert _strip_json_comments(text) == '{"a": "// not a comment",  "b": 1 \n}'
    assert _root_policy({}) == ("RootManageSharedAccessKey", "SAS_KEY_VALUE")
    ns = {"SharedAccessPolicies": [{"Name": "s", "Key": "k1", "Rights": ["Send"]},
                                   {"Name": "m", "Key": "k2", "Rights": ["Manage"]}]}
    assert _root_policy({"UserConfig": {"Namespaces": [ns]}}) == ("m", "k2")
