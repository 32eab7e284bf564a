"""The administration API (ATOM/XML on the control port) through Microsoft's
ServiceBusAdministrationClient (azure-servicebus 7.8.2, sync and async), pointed at the
control port the way Microsoft's emulator README does for Python.

Entities made here must behave like configured ones over AMQP, and the emulator's JSON
control paths must see them.
"""
import base64
import datetime
import hashlib
import hmac
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.management import (CorrelationRuleFilter, FalseRuleFilter, ServiceBusAdministrationClient,
                                         SqlRuleAction, SqlRuleFilter, TrueRuleFilter)

KEY_NAME, KEY = "RootManageSharedAccessKey", "SAS_KEY_VALUE"


def uid(prefix):
    return prefix + "-" + uuid.uuid4().hex[:10]


def point_at(client, emulator):
    client._impl._client._base_url = emulator.control
    return client


@pytest.fixture
def admin(emulator):
    with point_at(ServiceBusAdministrationClient.from_connection_string(emulator.conn_str), emulator) as c:
        yield c


def sas(uri, key_name=KEY_NAME, key=KEY, expiry=None):
    expiry = int(time.time()) + 3600 if expiry is None else expiry
    sr = urllib.parse.quote_plus(uri)
    sig = base64.b64encode(hmac.new(key.encode(), (sr + "\n" + str(expiry)).encode(), hashlib.sha256).digest())
    return "SharedAccessSignature sr=%s&sig=%s&se=%d&skn=%s" % (sr, urllib.parse.quote_plus(sig), expiry, key_name)


def raw(emulator, method, path, body=None, token=None, headers=None):
    """One administration request by hand: (status, content type, body text)."""
    url = emulator.control + path + ("&" if "?" in path else "?") + "api-version=2021-05"
    req = urllib.request.Request(url, data=body.encode() if body else None, method=method)
    if token is not False:
        req.add_header("Authorization", token or sas("https://localhost/"))
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


# ---------------------------------------------------------------- queues

def test_queue_create_get_update_delete(admin, emulator):
    name = uid("aq")
    fwd = emulator.create_queue()
    made = admin.create_queue(
        name, lock_duration=datetime.timedelta(seconds=45), max_delivery_count=7,
        default_message_time_to_live=datetime.timedelta(hours=2), dead_lettering_on_message_expiration=True,
        requires_duplicate_detection=True, duplicate_detection_history_time_window=datetime.timedelta(minutes=3),
        forward_dead_lettered_messages_to=fwd, max_size_in_megabytes=2048, user_metadata="a <b> & 'c'")
    assert made.name == name and made.max_delivery_count == 7
    q = admin.get_queue(name)
    assert q.lock_duration == datetime.timedelta(seconds=45)
    assert q.default_message_time_to_live == datetime.timedelta(hours=2)
    assert q.dead_lettering_on_message_expiration is True
    assert q.requires_duplicate_detection is True
    assert q.duplicate_detection_history_time_window == datetime.timedelta(minutes=3)
    assert q.requires_session is False
    assert q.max_size_in_megabytes == 2048
    assert q.user_metadata == "a <b> & 'c'"
    assert q.forward_dead_lettered_messages_to == fwd
    assert q.status == "Active"
    # the JSON control surface sees it
    assert emulator.entities()[name]["kind"] == "queue"
    # update: a full PUT with If-Match: *
    q.max_delivery_count = 3
    q.lock_duration = datetime.timedelta(seconds=20)
    admin.update_queue(q)
    q2 = admin.get_queue(name)
    assert (q2.max_delivery_count, q2.lock_duration) == (3, datetime.timedelta(seconds=20))
    assert q2.default_message_time_to_live == datetime.timedelta(hours=2)
    rt = admin.get_queue_runtime_properties(name)
    assert rt.updated_at_utc >= rt.created_at_utc
    # the service refuses to change RequiresSession of an existing queue
    q2.requires_session = True
    with pytest.raises(HttpResponseError) as e:
        admin.update_queue(q2)
    assert e.value.status_code == 400 and "RequiresSession" in str(e.value)
    assert admin.get_queue(name).requires_session is False
    admin.delete_queue(name)
    with pytest.raises(ResourceNotFoundError):
        admin.get_queue(name)
    assert name not in emulator.entities()


def test_queue_defaults_round_trip_through_update(admin):
    name = uid("aq")
    admin.create_queue(name)
    q = admin.get_queue(name)
    assert q.max_delivery_count == 10 and q.lock_duration == datetime.timedelta(minutes=1)
    never = q.default_message_time_to_live
    assert never > datetime.timedelta(days=10000000)
    admin.update_queue(q)  # sends every field back, "never" included
    assert admin.get_queue(name).default_message_time_to_live == never


def test_queue_errors(admin, emulator):
    name = uid("aq")
    admin.create_queue(name)
    with pytest.raises(ResourceExistsError):
        admin.create_queue(name)
    with pytest.raises(ResourceNotFoundError):
        admin.get_queue(uid("missing"))
    with pytest.raises(ResourceNotFoundError):
        admin.delete_queue(uid("missing"))
    with pytest.raises(HttpResponseError) as e:
        admin.create_queue(uid("aq"), max_delivery_count=0)
    assert e.value.status_code == 400 and "MaxDeliveryCount" in str(e.value)
    with pytest.raises(HttpResponseError) as e:
        admin.create_queue(uid("aq"), forward_to=uid("nowhere"))
    assert e.value.status_code == 400 and "forward" in str(e.value)
    # a name the emulator refuses
    with pytest.raises(HttpResponseError) as e:
        admin.create_queue("-bad-")
    assert e.value.status_code == 400
    # a topic's name is taken for queues too
    topic = emulator.create_topic()
    with pytest.raises(ResourceExistsError):
        admin.create_queue(topic)
    # not well-formed XML, a DTD
    st, ct, body = raw(emulator, "PUT", "/" + uid("aq"), "<entry><content>")
    assert st == 400 and "xml" in ct and "<Code>400</Code>" in body
    st, _, body = raw(emulator, "PUT", "/" + uid("aq"), '<!DOCTYPE x [<!ENTITY a "b">]><entry/>')
    assert st == 400 and "DTD" in body


def test_runtime_counts_follow_amqp_traffic(admin, emulator, client):
    import asyncio
    name = uid("aq")
    admin.create_queue(name, max_delivery_count=5)

    async def traffic():
        async with client:
            async with client.get_queue_sender(name) as s:
                await s.send_messages([ServiceBusMessage("m%d" % i) for i in range(4)])
                await s.schedule_messages(ServiceBusMessage("later"),
                                          datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1))
            async with client.get_queue_receiver(name) as r:
                got = await r.receive_messages(max_message_count=1, max_wait_time=5)
                await r.dead_letter_message(got[0], reason="test")
    asyncio.run(traffic())
    emulator.wait_count(name, "dead_lettered", 1)
    rt = admin.get_queue_runtime_properties(name)
    assert rt.active_message_count == 3
    assert rt.scheduled_message_count == 1
    assert rt.dead_letter_message_count == 1
    assert rt.transfer_dead_letter_message_count == 0
    assert rt.total_message_count == 5
    assert rt.size_in_bytes > 0
    assert rt.created_at_utc is not None and rt.accessed_at_utc is not None
    listed = {q.name: q for q in admin.list_queues_runtime_properties()}
    assert listed[name].active_message_count == 3


def test_forwarding_set_through_admin_moves_messages(admin, emulator, client):
    import asyncio
    target, source = uid("aq"), uid("aq")
    admin.create_queue(target)
    admin.create_queue(source)
    q = admin.get_queue(source)
    q.forward_to = target  # the client sends it as sb://<host>/<name>
    admin.update_queue(q)
    assert admin.get_queue(source).forward_to == target

    async def traffic():
        async with client:
            async with client.get_queue_sender(source) as s:
                await s.send_messages(ServiceBusMessage("hop"))
            async with client.get_queue_receiver(target) as r:
                got = await r.receive_messages(max_message_count=1, max_wait_time=5)
                await r.complete_message(got[0])
                return [str(m) for m in got]
    assert asyncio.run(traffic()) == ["hop"]
    assert admin.get_queue_runtime_properties(source).total_message_count == 0


def test_status_switches_sending_and_receiving_off(admin, emulator):
    """Disabled / SendDisabled / ReceiveDisabled refuse the matching links with
    com.microsoft:entity-disabled (the SDK's MessagingEntityDisabledError), detach the ones
    already attached, and Active lets them in again."""
    import asyncio
    from azure.servicebus.exceptions import MessagingEntityDisabledError
    from azure.servicebus.aio import ServiceBusClient
    from azure.servicebus.management import EntityStatus
    # no retries: the SDK would back off and try a refused attach again
    client = ServiceBusClient.from_connection_string(emulator.conn_str, connection_verify=emulator.ca,
                                                     retry_total=0)
    name = uid("st")
    admin.create_queue(name)

    def set_status(status):
        q = admin.get_queue(name)
        q.status = status
        admin.update_queue(q)
        assert admin.get_queue(name).status == status

    async def send():
        async with client.get_queue_sender(name) as s:
            await s.send_messages(ServiceBusMessage("x"))

    async def receive():
        async with client.get_queue_receiver(name, max_wait_time=2) as r:
            return [str(m) for m in await r.receive_messages(max_message_count=5, max_wait_time=2)]

    async def scenario():
        async with client:
            async with client.get_queue_receiver(name) as held:
                await held.receive_messages(max_message_count=1, max_wait_time=0.5)  # attached
                set_status(EntityStatus.disabled)
                with pytest.raises(Exception):  # the attached receiver was detached
                    await held.receive_messages(max_message_count=1, max_wait_time=2)
            with pytest.raises(MessagingEntityDisabledError):
                await send()
            with pytest.raises(MessagingEntityDisabledError):
                await receive()
            set_status(EntityStatus.receive_disabled)
            await send()
            with pytest.raises(MessagingEntityDisabledError):
                await receive()
            set_status(EntityStatus.send_disabled)
            with pytest.raises(MessagingEntityDisabledError):
                await send()
            assert await receive() == ["x"]
            set_status(EntityStatus.active)
            await send()
            assert await receive() == ["x"]
    asyncio.run(scenario())


def test_list_pages_with_skip_and_top(admin, emulator):
    prefix = uid("page")
    names = sorted("%s-%d" % (prefix, i) for i in range(5))
    for n in names:
        admin.create_queue(n)
    got = [q.name for q in admin.list_queues(max_page_size=2)]
    assert [n for n in got if n.startswith(prefix)] == names
    assert len(got) == len(set(got))
    # by hand: a page with a next link, and the last page without one
    st, ct, body = raw(emulator, "GET", "/$Resources/Queues?$skip=0&$top=2")
    assert st == 200 and "type=feed" in ct and body.count("<entry") == 2 and 'rel="next"' in body
    total = len([q for q in admin.list_queues()])
    st, _, body = raw(emulator, "GET", "/$Resources/Queues?$skip=%d&$top=2" % (total - 1))
    assert st == 200 and body.count("<entry") == 1 and 'rel="next"' not in body


# ---------------------------------------------------------------- topics, subscriptions, rules

def test_topic_and_subscription_lifecycle(admin, emulator):
    topic = uid("at")
    admin.create_topic(topic, default_message_time_to_live=datetime.timedelta(minutes=30))
    assert admin.get_topic(topic).default_message_time_to_live == datetime.timedelta(minutes=30)
    assert topic in [t.name for t in admin.list_topics()]
    admin.create_subscription(topic, "s1", lock_duration=datetime.timedelta(seconds=20), max_delivery_count=4)
    admin.create_subscription(topic, "s2", requires_session=True)
    with pytest.raises(ResourceExistsError):
        admin.create_subscription(topic, "s1")
    with pytest.raises(ResourceNotFoundError):
        admin.create_subscription(uid("missing"), "s1")
    s1 = admin.get_subscription(topic, "s1")
    assert (s1.lock_duration, s1.max_delivery_count) == (datetime.timedelta(seconds=20), 4)
    assert admin.get_subscription(topic, "s2").requires_session is True
    assert [s.name for s in admin.list_subscriptions(topic)] == ["s1", "s2"]
    assert admin.get_topic_runtime_properties(topic).subscription_count == 2
    s1.max_delivery_count = 6
    admin.update_subscription(topic, s1)
    assert admin.get_subscription(topic, "s1").max_delivery_count == 6
    s2 = admin.get_subscription(topic, "s2")
    s2.requires_session = False
    with pytest.raises(HttpResponseError) as e:
        admin.update_subscription(topic, s2)
    assert e.value.status_code == 400
    t = admin.get_topic(topic)
    t.default_message_time_to_live = datetime.timedelta(minutes=10)
    admin.update_topic(t)
    assert admin.get_topic(topic).default_message_time_to_live == datetime.timedelta(minutes=10)
    assert emulator.entities()[topic + "/Subscriptions/s1"]["kind"] == "subscription"
    admin.delete_subscription(topic, "s2")
    with pytest.raises(ResourceNotFoundError):
        admin.get_subscription(topic, "s2")
    admin.delete_topic(topic)
    with pytest.raises(ResourceNotFoundError):
        admin.get_topic(topic)
    assert topic + "/Subscriptions/s1" not in emulator.entities()


def test_rules_filter_the_next_message(admin, emulator, client):
    import asyncio
    topic = uid("at")
    admin.create_topic(topic)
    admin.create_subscription(topic, "red")
    admin.create_subscription(topic, "corr")
    # the subscription starts with $Default (true), as on the service
    assert [(r.name, type(r.filter)) for r in admin.list_rules(topic, "red")] == [("$Default", TrueRuleFilter)]
    admin.delete_rule(topic, "red", "$Default")
    admin.create_rule(topic, "red", "is-red", filter=SqlRuleFilter("color = 'red'"),
                      action=SqlRuleAction("SET stamped = 'yes'"))
    with pytest.raises(ResourceExistsError):
        admin.create_rule(topic, "red", "is-red")
    admin.delete_rule(topic, "corr", "$Default")
    admin.create_rule(topic, "corr", "c", filter=CorrelationRuleFilter(
        correlation_id="cid", properties={"n": 7, "s": "x", "b": True, "d": 1.5}))
    r = admin.get_rule(topic, "corr", "c")
    assert r.filter.correlation_id == "cid"
    assert r.filter.properties == {"n": 7, "s": "x", "b": True, "d": 1.5}
    red = admin.get_rule(topic, "red", "is-red")
    assert red.filter.sql_expression == "color = 'red'" and red.action.sql_expression == "SET stamped = 'yes'"
    with pytest.raises(HttpResponseError) as e:
        admin.create_rule(topic, "red", "broken", filter=SqlRuleFilter("color = = 'red'"))
    assert e.value.status_code == 400

    async def traffic():
        async with client:
            async with client.get_topic_sender(topic) as s:
                await s.send_messages(ServiceBusMessage("blue", application_properties={"color": "blue"}))
                await s.send_messages(ServiceBusMessage("red", application_properties={"color": "red"}))
                await s.send_messages(ServiceBusMessage("c", correlation_id="cid",
                                                        application_properties={"n": 7, "s": "x", "b": True, "d": 1.5}))
            async with client.get_subscription_receiver(topic, "red") as rcv:
                msgs = await rcv.receive_messages(max_message_count=5, max_wait_time=2)
                return [(str(m), m.application_properties.get(b"stamped")) for m in msgs]
    assert asyncio.run(traffic()) == [("red", b"yes")]
    assert admin.get_subscription_runtime_properties(topic, "corr").active_message_count == 1
    # update a rule: the next message follows the new filter
    rule = admin.get_rule(topic, "red", "is-red")
    rule.filter = FalseRuleFilter()
    rule.action = None
    admin.update_rule(topic, "red", rule)
    assert isinstance(admin.get_rule(topic, "red", "is-red").filter, FalseRuleFilter)
    admin.delete_rule(topic, "red", "is-red")
    with pytest.raises(ResourceNotFoundError):
        admin.delete_rule(topic, "red", "is-red")
    assert list(admin.list_rules(topic, "red")) == []


def test_namespace_properties(admin, emulator):
    ns = admin.get_namespace_properties()
    assert ns.name == "sbemulatorns"
    assert ns.messaging_sku == "Standard" and ns.namespace_type == "Messaging"


# ---------------------------------------------------------------- authorization

def test_authorization_is_checked(emulator):
    bad = ServiceBusAdministrationClient.from_connection_string(emulator.conn_str.replace("SAS_KEY_VALUE", "nope"))
    with point_at(bad, emulator):
        with pytest.raises(HttpResponseError) as e:
            bad.get_queue("queue.1")
    assert e.value.status_code == 401 and "signature" in str(e.value)
    st, ct, body = raw(emulator, "GET", "/queue.1", token=False)
    assert st == 401 and "<Code>401</Code>" in body and "xml" in ct
    st, _, body = raw(emulator, "GET", "/queue.1", token=sas("https://localhost/", key_name="NoSuchKey"))
    assert st == 401 and "NoSuchKey" in body
    st, _, body = raw(emulator, "GET", "/queue.1", token=sas("https://localhost/", expiry=int(time.time()) - 10))
    assert st == 401 and "expired" in body
    st, _, body = raw(emulator, "GET", "/queue.1")
    assert st == 200 and "<QueueDescription" in body


def test_json_control_paths_still_answer_json(emulator):
    assert emulator.call("GET", "/health") == (200, {"status": "healthy"})
    name = emulator.create_queue()
    st, ct, body = raw(emulator, "GET", "/" + name)
    assert st == 200 and "<title type=\"text\">%s</title>" % name in body
    assert emulator.call("DELETE", "/entities/" + name)[0] == 200
    assert raw(emulator, "GET", "/" + name)[0] == 404


# ---------------------------------------------------------------- async client

async def test_async_administration_client(emulator):
    from azure.servicebus.aio.management import ServiceBusAdministrationClient as AsyncAdmin
    name, topic = uid("aq"), uid("at")
    async with point_at(AsyncAdmin.from_connection_string(emulator.conn_str), emulator) as admin:
        await admin.create_queue(name, max_delivery_count=3)
        assert (await admin.get_queue(name)).max_delivery_count == 3
        assert name in [q.name async for q in admin.list_queues()]
        await admin.create_topic(topic)
        await admin.create_subscription(topic, "s")
        await admin.create_rule(topic, "s", "r", filter=SqlRuleFilter("a = 1"))
        assert [r.name async for r in admin.list_rules(topic, "s")] == ["$Default", "r"]
        assert (await admin.get_queue_runtime_properties(name)).total_message_count == 0
        assert (await admin.get_namespace_properties()).name == "sbemulatorns"
        with pytest.raises(ResourceExistsError):
            await admin.create_queue(name)
        await admin.delete_topic(topic)
        await admin.delete_queue(name)
        with pytest.raises(ResourceNotFoundError):
            await admin.get_queue(name)
