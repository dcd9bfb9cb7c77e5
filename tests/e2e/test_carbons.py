"""Message Carbons (XEP-0280): alice's phone and laptop both see the whole conversation."""

import asyncio

from conftest import DOMAIN, STEP, online, run

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


async def with_carbons(client):
    """Enable carbons and return a queue of (direction, forwarded message)."""
    client.register_plugin("xep_0280")
    copies: asyncio.Queue = asyncio.Queue()
    client.add_event_handler("carbon_received",
                             lambda m: copies.put_nowait(("received", m["carbon_received"])))
    client.add_event_handler("carbon_sent",
                             lambda m: copies.put_nowait(("sent", m["carbon_sent"])))
    await client.plugin["xep_0280"].enable(timeout=STEP)
    return copies


def test_both_devices_see_both_sides_of_a_chat(kith):
    async def scenario():
        async with online(kith, "alice", "phone", priority=10) as phone, \
                online(kith, "alice", "laptop", priority=1) as laptop, \
                online(kith, "bob", "desk") as bob:
            copies = await with_carbons(laptop)
            await with_carbons(phone)

            # bob writes to alice's bare JID: the phone (higher priority) gets it, the
            # laptop gets a <received/> copy.
            bob.send_message(mto=ALICE, mbody="dinner at 7?", mtype="chat")
            assert (await phone.next_message())["body"] == "dinner at 7?"
            direction, fwd = await asyncio.wait_for(copies.get(), STEP)
            assert direction == "received"
            assert fwd["body"] == "dinner at 7?" and fwd["from"].bare == BOB

            # alice answers from the phone: the laptop gets a <sent/> copy.
            phone.send_message(mto=BOB, mbody="yes!", mtype="chat")
            assert (await bob.next_message())["body"] == "yes!"
            direction, fwd = await asyncio.wait_for(copies.get(), STEP)
            assert direction == "sent"
            assert fwd["body"] == "yes!" and str(fwd["to"]) == BOB
            assert str(fwd["from"]) == f"{ALICE}/phone", "the copy shows which device sent it"

            # A private message is not copied (XEP-0280 §7).
            msg = phone.make_message(mto=BOB, mbody="just between us", mtype="chat")
            msg.enable("carbon_private")
            msg.send()
            assert (await bob.next_message())["body"] == "just between us"
            # A normal chat after it is copied: the private one did not come first.
            phone.send_message(mto=BOB, mbody="ok", mtype="chat")
            await bob.next_message()
            direction, fwd = await asyncio.wait_for(copies.get(), STEP)
            assert (direction, fwd["body"]) == ("sent", "ok")
    run(scenario())


def test_devices_without_carbons_get_no_copies(kith):
    async def scenario():
        async with online(kith, "alice", "phone", priority=10) as phone, \
                online(kith, "alice", "laptop", priority=1) as laptop, \
                online(kith, "bob", "desk") as bob:
            await with_carbons(phone)
            bob.send_message(mto=ALICE, mbody="one", mtype="chat")
            assert (await phone.next_message())["body"] == "one"
            phone.send_message(mto=BOB, mbody="two", mtype="chat")
            assert (await bob.next_message())["body"] == "two"
            # The laptop never enabled carbons: nothing arrives there.
            try:
                got = await laptop.next_message(timeout=1.5, body_only=False)
            except asyncio.TimeoutError:
                got = None
            assert got is None, f"unexpected copy on the laptop: {got}"
    run(scenario())


def test_carbons_are_advertised(kith):
    async def scenario():
        async with online(kith, "alice") as alice:
            info = await alice.plugin["xep_0030"].get_info(jid=DOMAIN, timeout=STEP)
            assert "urn:xmpp:carbons:2" in info["disco_info"]["features"]
    run(scenario())
