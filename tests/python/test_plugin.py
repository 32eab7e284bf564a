"""The pytest plugin (servicebus.testing.pytest_plugin), run as a user runs it.

Each test writes a small test file and runs pytest on it in a subprocess
(pytester.runpytest_subprocess), so the plugin is loaded the way users get
it: through the installed package's pytest11 entry point.
"""

import os

pytest_plugins = ["pytester"]

INI_AUTO = """
[pytest]
asyncio_mode = auto
"""


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", *args, timeout=120)


def test_the_plugin_is_registered_by_entry_point(pytester):
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--servicebus-config=FILE*", "*--servicebus-emulator=PATH*"])
    assert "servicebus" in {ep.name for ep in _entry_points("pytest11")}


def test_report_header_names_the_emulator(pytester):
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = run(pytester, "--servicebus-emulator", "/no/such/emu")
    result.stdout.fnmatch_lines(["servicebus: sbus-emulator not found*/no/such/emu*, config built-in"])
    result.assert_outcomes(passed=1)  # tests that do not use the fixtures are not affected


def _entry_points(group):
    from importlib.metadata import entry_points

    eps = entry_points()
    return eps.select(group=group) if hasattr(eps, "select") else eps.get(group, [])


def test_two_tests_on_servicebus_queue_never_see_each_others_messages(pytester):
    """Each test sends a marker and receives everything its queue holds:
    only its own marker, although both run on one emulator, in either order."""
    pytester.makeini(INI_AUTO)
    pytester.makepyfile(
        test_isolation="""
        from servicebus import Message, ReceiveMode

        async def check(client, queue, marker, other_queues):
            async with client.get_queue_receiver(queue, receive_mode=ReceiveMode.ReceiveAndDelete) as receiver:
                assert await receiver.peek_messages(10) == []  # a fresh queue
                async with client.get_queue_sender(queue) as sender:
                    await sender.send_messages([Message(marker), Message(marker)])
                    got = []
                    while True:
                        batch = await receiver.receive_messages(max_message_count=10, max_wait_time=1)
                        if not batch:
                            break
                        got += [str(m) for m in batch]
                    assert got == [marker, marker]
                    # left behind on purpose: a shared queue would show it to the other test
                    await sender.send_messages(Message("leftover-" + marker))
            other_queues.append(str(queue))

        SEEN = []

        async def test_one(servicebus_client, servicebus_queue):
            await check(servicebus_client, servicebus_queue, "one", SEEN)

        async def test_two(servicebus_client, servicebus_queue):
            await check(servicebus_client, servicebus_queue, "two", SEEN)

        def test_names_differ_and_queues_were_deleted(servicebus_emulator):
            assert len(SEEN) == 2 and SEEN[0] != SEEN[1]
            names = {n.lower() for n in servicebus_emulator.entities()}
            assert not names & {n.lower() for n in SEEN}
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=3)


def test_servicebus_topic_and_marks(pytester):
    pytester.makeini(INI_AUTO)
    pytester.makepyfile(
        test_topic="""
        import pytest
        from servicebus import Message, ReceiveMode

        async def test_default_subscription(servicebus_client, servicebus_topic, servicebus_emulator):
            assert servicebus_topic.subscriptions == ("sub",)
            async with servicebus_client.get_topic_sender(servicebus_topic) as sender:
                await sender.send_messages(Message("fan-out"))
            assert servicebus_emulator.counts(servicebus_topic.subscription_path())["active"] == 1
            async with servicebus_client.get_subscription_receiver(
                    servicebus_topic, servicebus_topic.subscription,
                    receive_mode=ReceiveMode.ReceiveAndDelete) as receiver:
                got = await receiver.receive_messages(max_wait_time=5)
            assert [str(m) for m in got] == ["fan-out"]

        @pytest.mark.servicebus_topic(subscriptions=["a", {"Name": "red", "Rules": [
            {"Name": "red", "Properties": {"FilterType": "Sql", "SqlFilter": {"SqlExpression": "color = 'red'"}}}]}])
        async def test_named_subscriptions(servicebus_client, servicebus_topic, servicebus_emulator):
            assert servicebus_topic.subscriptions == ("a", "red")
            async with servicebus_client.get_topic_sender(servicebus_topic) as sender:
                await sender.send_messages(Message("blue", application_properties={"color": "blue"}))
            assert servicebus_emulator.counts(servicebus_topic.subscription_path("a"))["active"] == 1
            assert servicebus_emulator.counts(servicebus_topic.subscription_path("red"))["active"] == 0

        @pytest.mark.servicebus_queue(requires_session=True, lock_duration=2)
        async def test_queue_mark(servicebus_client, servicebus_queue):
            async with servicebus_client.get_queue_sender(servicebus_queue) as sender:
                await sender.send_messages(Message("s", session_id="abc"))
            async with servicebus_client.get_queue_session_receiver(servicebus_queue, session_id="abc",
                                                                   max_wait_time=5) as receiver:
                (m,) = await receiver.receive_messages(max_wait_time=5)
                assert m.session_id == "abc"
                await m.complete()

        def test_sync_tests_get_the_emulator(servicebus_emulator, servicebus_connection_string):
            assert servicebus_emulator.running
            assert servicebus_connection_string == servicebus_emulator.connection_string
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=4)


def test_servicebus_entities_for_a_forwarding_pair(pytester):
    pytester.makeini(INI_AUTO)
    pytester.makepyfile(
        test_entities="""
        from servicebus import Message

        MADE = []

        async def test_forward(servicebus_client, servicebus_entities, servicebus_emulator):
            target = servicebus_entities.queue()
            source = servicebus_entities.queue(forward_to=target)
            topic = servicebus_entities.topic(["x", "y"])
            MADE.extend([target, source, topic])
            assert topic.subscriptions == ("x", "y")
            async with servicebus_client.get_queue_sender(source) as sender:
                await sender.send_messages(Message("hop"))
            assert servicebus_emulator.counts(target)["active"] == 1

        def test_all_deleted(servicebus_emulator):
            names = {n.lower() for n in servicebus_emulator.entities()}
            assert len(MADE) == 3 and not names & {m.lower() for m in MADE}
        """
    )
    run(pytester).assert_outcomes(passed=2)


def test_strict_mode_client_fixture(pytester):
    """Without asyncio_mode=auto the plugin's async fixture still works."""
    pytester.makeini("[pytest]\nasyncio_mode = strict\n")
    pytester.makepyfile(
        test_strict="""
        import pytest

        @pytest.mark.asyncio
        async def test_client(servicebus_client, servicebus_queue):
            from servicebus import Message
            async with servicebus_client.get_queue_sender(servicebus_queue) as sender:
                await sender.send_messages(Message("x"))
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_config_option_and_ini_key(pytester):
    config = pytester.path / "sb.json"
    config.write_text(
        '{"UserConfig": {"Namespaces": [{"Name": "ns", // a comment\n'
        '"Queues": [{"Name": "configured"}]}]}}'
    )
    pytester.makepyfile(
        test_cfg="""
        def test_configured_queue(servicebus_emulator):
            assert "configured" in servicebus_emulator.entities()
        """
    )
    run(pytester, "--servicebus-config", str(config)).assert_outcomes(passed=1)
    pytester.makeini("[pytest]\nservicebus_config = sb.json\n")
    run(pytester).assert_outcomes(passed=1)


def test_a_bad_config_fails_the_fixture_with_the_reason(pytester):
    config = pytester.path / "bad.json"
    config.write_text('{"UserConfig": {"Namespaces": [{"Name": "ns", "Queues": [{"Name": "q", '
                      '"Properties": {"LockDuration": "soon"}}]}]}}')
    pytester.makepyfile(test_bad="def test_x(servicebus_emulator):\n    pass\n")
    result = run(pytester, "--servicebus-config", str(config))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*EmulatorConfigError*LockDuration*soon*"])


def test_emulator_option_names_the_binary(pytester):
    pytester.makepyfile(test_bin="def test_x(servicebus_emulator):\n    pass\n")
    result = run(pytester, "--servicebus-emulator", "/nonexistent/sbus-emulator")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*EmulatorNotFoundError*/nonexistent/sbus-emulator*"])
    pytester.makeini("[pytest]\nservicebus_emulator = %s\n" % os.environ.get("SBUS_EMULATOR", ""))
    if os.environ.get("SBUS_EMULATOR"):
        pytester.makepyfile(test_bin="def test_x(servicebus_emulator):\n    assert servicebus_emulator.binary\n")
        run(pytester).assert_outcomes(passed=1)
