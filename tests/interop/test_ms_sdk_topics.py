"""Topics: fan-out to subscriptions whose rules match (correlation, SQL, actions, $Default)."""
from azure.servicebus import ServiceBusMessage

SUBS = [
    {"Name": "all"},
    {"Name": "json", "Rules": [{"Name": "ct", "Properties": {
        "FilterType": "Correlation", "CorrelationFilter": {"ContentType": "application/json"}}}]},
    {"Name": "prop", "Rules": [{"Name": "p", "Properties": {
        "FilterType": "Correlation", "CorrelationFilter": {"Properties": {"prop1": "value1"}}}}]},
    {"Name": "sql", "Rules": [{"Name": "s", "Properties": {
        "FilterType": "Sql", "SqlFilter": {"SqlExpression": "sys.MessageId = '123456' AND userProp1 = 'value1'"},
        "Action": {"SqlExpression": "SET sys.To = 'Entity'; SET stamped = 'yes'"}}}]},
    {"Name": "range", "Rules": [{"Name": "r", "Properties": {
        "FilterType": "Sql", "SqlFilter": {"SqlExpression": "qty > 5 AND color IN ('red', 'blue') AND name LIKE 'wid%'"}}}]},
]


async def drain(client, topic, sub):
    out = []
    async with client.get_subscription_receiver(topic, sub) as r:
        while True:
            msgs = await r.receive_messages(max_message_count=10, max_wait_time=1)
            if not msgs:
                return out
            for m in msgs:
                out.append(m)
                await r.complete_message(m)


async def test_fan_out_follows_the_rules(client, emulator):
    topic = emulator.create_topic(subscriptions=SUBS)
    async with client:
        async with client.get_topic_sender(topic) as s:
            await s.send_messages(ServiceBusMessage("plain"))
            await s.send_messages(ServiceBusMessage("{}", content_type="application/json"))
            await s.send_messages(ServiceBusMessage("p", application_properties={"prop1": "value1"}))
            await s.send_messages(ServiceBusMessage("sql", message_id="123456", application_properties={"userProp1": "value1"}))
            await s.send_messages(ServiceBusMessage("w", application_properties={"qty": 9, "color": "blue", "name": "widget"}))
            await s.send_messages(ServiceBusMessage("w2", application_properties={"qty": 2, "color": "blue", "name": "widget"}))
        counts = emulator.entities()
        assert counts[topic + "/Subscriptions/all"]["active"] == 6
        assert [str(m) for m in await drain(client, topic, "json")] == ["{}"]
        assert [str(m) for m in await drain(client, topic, "prop")] == ["p"]
        sql = await drain(client, topic, "sql")
        assert [str(m) for m in sql] == ["sql"]
        assert sql[0].to == "Entity"
        assert sql[0].application_properties[b"stamped"] == b"yes"
        assert [str(m) for m in await drain(client, topic, "range")] == ["w"]
        all_msgs = await drain(client, topic, "all")
        assert [m.sequence_number for m in all_msgs] == [1, 2, 3, 4, 5, 6]


async def test_microsoft_sample_config_subscriptions(client, emulator):
    async with client:
        async with client.get_topic_sender("topic.1") as s:
            await s.send_messages(ServiceBusMessage("json", content_type="application/json"))
            await s.send_messages(ServiceBusMessage("red", application_properties={"color": "red"}))
        assert [str(m) for m in await drain(client, "topic.1", "json-only")] == ["json"]
        red = await drain(client, "topic.1", "red")
        assert [str(m) for m in red] == ["red"]
        assert red[0].application_properties[b"routed"] == b"red"
        assert [str(m) for m in await drain(client, "topic.1", "all")] == ["json", "red"]
