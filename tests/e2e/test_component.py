"""External components (XEP-0114): the household's push app server (or a bot) runs as
its own program next to Kith, connects to the loopback component port with a shared
secret, and owns a domain. Users reach it, it reaches users, and it cannot pretend
to be anyone outside its domain."""

import asyncio

from conftest import (DOMAIN, NS_COMPONENT, NS_STANZAS, NS_STREAM, STEP, AppServer, LoginFailed,
                      RawXmpp, online, run, stream_error_condition)

APP = "push.localhost"
SECRET = "s3cret-for-the-app-server"
SECTIONS = {"components": {APP: SECRET, "bot.localhost": "bot-secret"}}


def start(kith_extra):
    return kith_extra(component=True, sections=SECTIONS)


def test_an_app_server_connects_is_listed_and_talks_with_users(kith_extra):
    kith = start(kith_extra)

    async def scenario():
        app = await AppServer(kith, APP, SECRET).start()
        try:
            async with online(kith, "alice", "phone") as alice:
                items = await alice.plugin["xep_0030"].get_items(jid=DOMAIN, timeout=STEP)
                assert APP in [i[0] for i in items["disco_items"]["items"]]
                # A user's IQ reaches the component, and its answer comes back.
                info = await alice.plugin["xep_0030"].get_info(jid=APP, timeout=STEP)
                assert "urn:xmpp:ping" in info["disco_info"]["features"]
                # A message to the component …
                alice.send_message(mto=APP, mbody="hello service", mtype="chat")
                got = await asyncio.wait_for(app.messages.get(), STEP)
                assert (got["body"], got["from"].full) == ("hello service",
                                                           f"alice@{DOMAIN}/phone")
                # … and one from a JID at its domain to the user.
                app.send_message(mto=f"alice@{DOMAIN}", mfrom=f"bot@{APP}",
                                 mbody="hello human", mtype="chat")
                msg = await alice.next_message()
                assert (msg["body"], msg["from"].full) == ("hello human", f"bot@{APP}")
                # A message to nobody comes back as an error the component understands.
                app.send_message(mto=f"nobody@{DOMAIN}", mfrom=f"bot@{APP}",
                                 mbody="hello?", mtype="chat")
                err = await asyncio.wait_for(app.messages.get(), STEP)
                assert err["type"] == "error", err
                # XEP-0114: the error is in the stream's namespace, like the stanza (slixmpp
                # reads it with fix_error_ns=True, a process-wide switch, so look directly).
                cond = err.xml.find(f"{{{NS_COMPONENT}}}error/{{{NS_STANZAS}}}service-unavailable")
                assert cond is not None, err
        finally:
            await app.close()
    run(scenario())


def test_a_wrong_secret_is_refused(kith_extra):
    kith = start(kith_extra)

    async def scenario():
        app = AppServer(kith, APP, "not the secret")
        try:
            try:
                await app.start()
            except LoginFailed:
                pass
            else:
                raise AssertionError("a component with a wrong secret was accepted")
            err = app.stream_errors.get_nowait()
            assert err["condition"] == "not-authorized", err
        finally:
            await app.close()
    run(scenario())



def test_raw_handshake_and_unknown_domain(kith_extra):
    """At the socket level: the header names the domain, an unknown one is refused."""
    kith = start(kith_extra)
    raw = RawXmpp(kith.component_port)
    try:
        raw.send(f"<?xml version='1.0'?><stream:stream to='nobody.localhost' "
                 f"xmlns='{NS_COMPONENT}' xmlns:stream='{NS_STREAM}'>")
        raw.read_until_closed()
        assert stream_error_condition(raw.raw) == "host-unknown", raw.raw
    finally:
        raw.close()


def test_one_connection_per_component_domain(kith_extra):
    kith = start(kith_extra)

    async def scenario():
        first = await AppServer(kith, APP, SECRET).start()
        second = AppServer(kith, APP, SECRET)
        try:
            try:
                await second.start()
            except LoginFailed:
                pass
            else:
                raise AssertionError("two connections for one component domain")
            assert second.stream_errors.get_nowait()["condition"] == "conflict"
            # The first connection still serves the domain.
            async with online(kith, "bob") as bob:
                bob.send_message(mto=APP, mbody="still there?", mtype="chat")
                got = await asyncio.wait_for(first.messages.get(), STEP)
                assert got["body"] == "still there?"
        finally:
            await second.close()
            await first.close()
    run(scenario())


def test_a_component_that_spoofs_from_is_closed(kith_extra):
    kith = start(kith_extra)

    async def scenario():
        app = await AppServer(kith, APP, SECRET).start()
        try:
            async with online(kith, "bob") as bob:
                app.send_raw(f"<message from='alice@{DOMAIN}/phone' to='bob@{DOMAIN}' "
                             "type='chat'><body>I am alice</body></message>")
                err = await asyncio.wait_for(app.stream_errors.get(), STEP)
                assert err["condition"] == "invalid-from", err
                await asyncio.wait_for(asyncio.shield(app.gone), STEP)
                await bob.expect_no_message(within=1.0)
        finally:
            await app.close()
    run(scenario())


def test_a_service_that_is_not_connected_answers_with_an_error(kith_extra):
    kith = start(kith_extra)

    async def scenario():
        async with online(kith, "carol") as carol:
            msg = carol.make_message(mto="bot.localhost", mbody="anyone?", mtype="chat")
            msg.send()
            err = await carol.next_message(body_only=False)
            assert err["type"] == "error"
            assert err["error"]["condition"] == "service-unavailable"
    run(scenario())


def test_a_component_gets_the_same_stanza_limit_as_devices(kith_extra):
    kith = start(kith_extra)

    async def scenario():
        app = await AppServer(kith, APP, SECRET).start()
        try:
            huge = "x" * (300 * 1024)  # above limits.stanza_size (256 KiB)
            app.send_raw(f"<message from='bot@{APP}' to='alice@{DOMAIN}'>"
                         f"<body>{huge}</body></message>")
            err = await asyncio.wait_for(app.stream_errors.get(), STEP)
            assert err["condition"] == "policy-violation", err
            await asyncio.wait_for(asyncio.shield(app.gone), STEP)
        finally:
            await app.close()
        assert kith.alive()
    run(scenario())
