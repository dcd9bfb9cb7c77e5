"""Push notifications (XEP-0357): alice's phone sleeps; when bob writes, the household's
push app server (a real XEP-0114 component here) is told, so it can wake the phone —
without reading the message unless the admin allowed it."""

import asyncio
import xml.etree.ElementTree as ET

import slixmpp

from conftest import (DOMAIN, NS_PUSH, STEP, AppServer, disable_push, enable_push, online,
                      run)

APP = "push.localhost"
SECRET = "app-server-secret"
DEVICE_SECRET = "eruio234vzxc2kla-91"


def start(kith_extra, **push):
    return kith_extra(component=True, sections={
        "components": {APP: SECRET},
        "push": {"min_interval_secs": 1, **push},
    })


async def write(sender, to: str, body: str):
    sender.send_message(mto=to, mbody=body, mtype="chat")
    # A round trip: the server handled the message before the ping's answer.
    await sender.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)


def test_a_message_while_the_phone_is_offline_notifies_the_app_server(kith_extra):
    kith = start(kith_extra)

    async def scenario():
        app = await AppServer(kith, APP, SECRET).start()
        try:
            async with online(kith, "alice", "phone") as alice:
                info = await alice.plugin["xep_0030"].get_info(jid=f"alice@{DOMAIN}",
                                                               timeout=STEP)
                assert NS_PUSH in info["disco_info"]["features"]
                await enable_push(alice, APP, "phone-node", DEVICE_SECRET)
            async with online(kith, "bob", "laptop") as bob:
                await write(bob, f"alice@{DOMAIN}", "dinner at eight?")
                n = await app.next_notification()
                assert n.account == f"alice@{DOMAIN}" and n.node == "phone-node", n
                assert n.fields["FORM_TYPE"] == "urn:xmpp:push:summary"
                assert n.fields["message-count"] == "1"
                assert n.fields["last-message-sender"].startswith(f"bob@{DOMAIN}")
                assert "last-message-body" not in n.fields, "bodies stay private by default"
                assert n.options["secret"] == DEVICE_SECRET
                # Two more in a burst: summed up, not lost.
                await write(bob, f"alice@{DOMAIN}", "or nine")
                await write(bob, f"alice@{DOMAIN}", "?")
                counts = []
                while not counts or counts[-1] != "3":
                    counts.append((await app.next_notification()).fields["message-count"])
                assert counts in (["3"], ["2", "3"]), counts
            # Alice's phone comes back: it gets the messages, and counting starts afresh.
            async with online(kith, "alice", "phone") as alice:
                bodies = [(await alice.next_message())["body"] for _ in range(3)]
                assert bodies == ["dinner at eight?", "or nine", "?"]
        finally:
            await app.close()
    run(scenario())


def test_bodies_go_to_the_app_server_only_when_configured(kith_extra):
    kith = start(kith_extra, include_body=True)

    async def scenario():
        app = await AppServer(kith, APP, SECRET).start()
        try:
            async with online(kith, "alice") as alice:
                await enable_push(alice, APP, "n")
            async with online(kith, "bob") as bob:
                await write(bob, f"alice@{DOMAIN}", "the keys are under the mat")
                n = await app.next_notification()
                assert n.fields["last-message-body"] == "the keys are under the mat"
                assert n.options is None
        finally:
            await app.close()
    run(scenario())


def test_an_inactive_phone_is_notified_an_active_one_is_not(kith_extra):
    kith = start(kith_extra)

    async def scenario():
        app = await AppServer(kith, APP, SECRET).start()
        try:
            async with online(kith, "alice", "phone") as alice, \
                    online(kith, "bob") as bob:
                await enable_push(alice, APP, "phone-node")
                await write(bob, f"alice@{DOMAIN}", "you there?")
                assert (await alice.next_message())["body"] == "you there?"
                # Chat states never wake a phone either.
                bob.register_plugin("xep_0085")
                m = bob.make_message(mto=f"alice@{DOMAIN}", mtype="chat")
                m["chat_state"] = "composing"
                m.send()
                alice.plugin["xep_0352"].send_inactive()
                await alice.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
                await write(bob, f"alice@{DOMAIN}", "phone in the pocket?")
                n = await app.next_notification()
                # Count 1: neither the message to the active phone nor the chat state
                # produced a notification.
                assert n.fields["message-count"] == "1", n
                assert (await alice.next_message())["body"] == "phone in the pocket?"
                await app.expect_no_notification(within=1.0)
        finally:
            await app.close()
    run(scenario())


def test_a_disabled_registration_gets_nothing(kith_extra):
    kith = start(kith_extra)

    async def scenario():
        app = await AppServer(kith, APP, SECRET).start()
        try:
            async with online(kith, "alice") as alice:
                await enable_push(alice, APP, "old-phone")
                await enable_push(alice, APP, "new-phone")
                await disable_push(alice, APP, "old-phone")
            async with online(kith, "bob") as bob:
                await write(bob, f"alice@{DOMAIN}", "one")
                n = await app.next_notification()
                assert n.node == "new-phone", n
                await app.expect_no_notification(within=1.0)
            async with online(kith, "alice") as alice:
                await disable_push(alice, APP)  # every node at that app server
            async with online(kith, "bob") as bob:
                await write(bob, f"alice@{DOMAIN}", "two")
                await app.expect_no_notification(within=1.5)
        finally:
            await app.close()
    run(scenario())


def test_an_app_server_error_removes_the_registration(kith_extra):
    kith = start(kith_extra)

    async def scenario():
        app = await AppServer(kith, APP, SECRET).start()
        try:
            for user in ("alice", "carol"):
                async with online(kith, user) as c:
                    await enable_push(c, APP, f"{user}-phone")
            app.refuse = "item-not-found"  # the app was uninstalled from alice's phone
            async with online(kith, "bob") as bob:
                await write(bob, f"alice@{DOMAIN}", "first")
                assert (await app.next_notification()).account == f"alice@{DOMAIN}"
                app.refuse = None
                await asyncio.sleep(1.2)  # past the rate limit, so only removal stops it
                await write(bob, f"alice@{DOMAIN}", "second")
                await write(bob, f"carol@{DOMAIN}", "marker")
                n = await app.next_notification()
                assert n.account == f"carol@{DOMAIN}", f"alice's registration survived: {n}"
                await app.expect_no_notification(within=1.0)
        finally:
            await app.close()
    run(scenario())


def test_bad_enable_requests_get_clear_errors(kith_extra):
    kith = start(kith_extra)

    async def scenario():
        async with online(kith, "alice") as alice:
            for attrs in ({"node": "n"}, {"jid": APP}, {"jid": "@@", "node": "n"}):
                iq = alice.make_iq_set()
                iq.append(ET.Element(f"{{{NS_PUSH}}}enable", attrs))
                try:
                    await iq.send(timeout=STEP)
                except slixmpp.exceptions.IqError as e:
                    assert e.iq["error"]["condition"] == "bad-request", attrs
                else:
                    raise AssertionError(f"enable {attrs} was accepted")
    run(scenario())


def test_a_group_chat_message_wakes_a_sleeping_phone(kith_extra):
    """A room message (or a private message through the room) for an occupant whose only
    device is inactive reaches the app server; the sender's own message does not."""
    from test_muc import create, enter, groupchat, say, set_aff
    kith = start(kith_extra)

    async def scenario():
        app = await AppServer(kith, APP, SECRET).start()
        try:
            async with online(kith, "alice", "phone") as alice, \
                    online(kith, "bob") as bob:
                room = await create(bob, "family", "dad")
                await set_aff(bob, room, f"alice@{DOMAIN}", "member")
                await enter(alice, room, "alice")
                await enable_push(alice, APP, "phone-node")
                alice.plugin["xep_0352"].send_inactive()
                await alice.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
                await say(alice, room, "going to sleep")
                await app.expect_no_notification(within=1.0)
                await say(bob, room, "dinner is ready")
                n = await app.next_notification()
                assert n.fields["message-count"] == "1", n
                while (await groupchat(alice, room))["body"] != "dinner is ready":
                    pass
        finally:
            await app.close()
    run(scenario())
