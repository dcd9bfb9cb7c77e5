"""Blocking (XEP-0191): bob blocks alice on his phone; his laptop knows at once, alice's
messages bounce and are neither delivered, stored offline nor archived, and she sees him
go offline; unblocking brings his presence back."""

import asyncio
import xml.etree.ElementTree as ET

from slixmpp import JID
from slixmpp.exceptions import IqError

from conftest import DOMAIN, STEP, online, run

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"
NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def with_blocking(client):
    client.register_plugin("xep_0191")
    pushes: asyncio.Queue = asyncio.Queue()
    client.add_event_handler("blocked", lambda iq: pushes.put_nowait(("block", iq)))
    client.add_event_handler("unblocked", lambda iq: pushes.put_nowait(("unblock", iq)))
    return pushes


def push_jids(iq, what):
    return {JID(i.get("jid")) for i in iq.xml.findall(
        f"{{{NS_BLOCKING}}}{what}/{{{NS_BLOCKING}}}item")}


async def error_reply(client, stanza_kind="message"):
    """The next error stanza of that kind the client receives."""
    q: asyncio.Queue = asyncio.Queue()
    name = f"{stanza_kind}_error"
    client.add_event_handler(name, q.put_nowait)
    try:
        return await asyncio.wait_for(q.get(), STEP)
    finally:
        client.del_event_handler(name, q.put_nowait)


async def befriend(a, b):
    """Mutual presence subscription between two online clients."""
    for x, y in ((a, b), (b, a)):
        x.send_presence_subscription(pto=y.boundjid.bare, ptype="subscribe")
        await y.next_presence(lambda p: p["type"] == "subscribe")
        y.send_presence_subscription(pto=x.boundjid.bare, ptype="subscribed")
        await x.next_presence(lambda p, y=y: p["type"] == "available"
                              and p["from"].bare == y.boundjid.bare)


def test_block_unblock_and_pushes_to_every_device(kith):
    async def scenario():
        async with online(kith, "bob", "phone") as phone, \
                online(kith, "bob", "laptop") as laptop:
            with_blocking(phone)
            laptop_pushes = with_blocking(laptop)
            info = await phone.plugin["xep_0030"].get_info(jid=BOB, timeout=STEP)
            assert NS_BLOCKING in info["disco_info"]["features"]
            assert await phone.plugin["xep_0191"].get_blocked_jids(timeout=STEP) == set()

            await phone.plugin["xep_0191"].block([ALICE, "spam.example"], timeout=STEP)
            what, iq = await asyncio.wait_for(laptop_pushes.get(), STEP)
            assert what == "block" and push_jids(iq, "block") == {JID(ALICE),
                                                                  JID("spam.example")}
            assert await laptop.plugin["xep_0191"].get_blocked_jids(timeout=STEP) == \
                {JID(ALICE), JID("spam.example")}

            await phone.plugin["xep_0191"].unblock([ALICE], timeout=STEP)
            what, iq = await asyncio.wait_for(laptop_pushes.get(), STEP)
            assert what == "unblock" and push_jids(iq, "unblock") == {JID(ALICE)}
            assert await laptop.plugin["xep_0191"].get_blocked_jids(timeout=STEP) == \
                {JID("spam.example")}

            await phone.plugin["xep_0191"].block([CAROL], timeout=STEP)
            await asyncio.wait_for(laptop_pushes.get(), STEP)
            # Unblock all: an empty <unblock/> (slixmpp's unblock() needs items).
            iq = phone.make_iq_set()
            ET.SubElement(iq.xml, f"{{{NS_BLOCKING}}}unblock")
            await iq.send(timeout=STEP)
            what, iq = await asyncio.wait_for(laptop_pushes.get(), STEP)
            assert what == "unblock" and push_jids(iq, "unblock") == set()
            assert await phone.plugin["xep_0191"].get_blocked_jids(timeout=STEP) == set()

            # Bad requests: nothing to block, a malformed JID.
            for items in ([], ["@@bad@@"]):
                iq = phone.make_iq_set()
                block = ET.SubElement(iq.xml, f"{{{NS_BLOCKING}}}block")
                for j in items:
                    ET.SubElement(block, f"{{{NS_BLOCKING}}}item", jid=j)
                try:
                    await iq.send(timeout=STEP)
                    raise AssertionError(f"block {items} accepted")
                except IqError as e:
                    assert e.iq["error"]["condition"] in ("bad-request", "jid-malformed")
    run(scenario())


def test_blocked_sender_bounces_and_nothing_is_kept(kith):
    async def scenario():
        async with online(kith, "bob", "phone") as bob:
            with_blocking(bob)
            await bob.plugin["xep_0191"].block([ALICE], timeout=STEP)
        # bob is offline now; alice writes anyway.
        async with online(kith, "alice", "phone") as alice:
            alice.send_message(mto=BOB, mbody="let me in", mtype="chat")
            err = await error_reply(alice)
            assert err["error"]["condition"] == "service-unavailable"
            assert err.xml.find(f".//{{{NS_BLOCKING_ERRORS}}}blocked") is None, \
                "the blocked sender must not learn it is blocked"
            # An IQ to one of bob's devices bounces the same way.
        async with online(kith, "bob", "phone") as bob, \
                online(kith, "alice", "phone") as alice:
            for p in ("xep_0059", "xep_0297", "xep_0313"):
                bob.register_plugin(p)
            await bob.expect_no_message(1.0)  # nothing was stored offline
            iq = alice.make_iq_get(ito=f"{BOB}/phone")
            iq.enable("ping")
            try:
                await iq.send(timeout=STEP)
                raise AssertionError("ping from a blocked contact answered")
            except IqError as e:
                assert e.iq["error"]["condition"] == "service-unavailable"
            # Live: still bounced, not delivered.
            alice.send_message(mto=BOB, mbody="hello?", mtype="chat")
            err = await error_reply(alice)
            assert err["error"]["condition"] == "service-unavailable"
            await bob.expect_no_message(1.0)
            # Nothing of it is in bob's history.
            res = await bob.plugin["xep_0313"].retrieve(timeout=STEP)
            assert res["mam"]["results"] == []
    run(scenario())


def test_writing_to_someone_you_blocked_is_refused(kith):
    async def scenario():
        async with online(kith, "bob", "phone") as bob, \
                online(kith, "alice", "phone") as alice:
            with_blocking(bob)
            await bob.plugin["xep_0191"].block([f"{ALICE}"], timeout=STEP)
            bob.send_message(mto=ALICE, mbody="oops", mtype="chat")
            err = await error_reply(bob)
            assert err["error"]["condition"] == "not-acceptable"
            assert err.xml.find(f".//{{{NS_BLOCKING_ERRORS}}}blocked") is not None
            await alice.expect_no_message(1.0)
            # carol is not blocked.
            async with online(kith, "carol", "phone") as carol:
                bob.send_message(mto=CAROL, mbody="hi carol", mtype="chat")
                assert (await carol.next_message())["body"] == "hi carol"
    run(scenario())


def test_blocking_hides_presence_and_unblocking_restores_it(kith):
    async def scenario():
        async with online(kith, "bob", "phone") as bob, \
                online(kith, "alice", "phone") as alice:
            await befriend(alice, bob)
            with_blocking(bob)
            await bob.plugin["xep_0191"].block([ALICE], timeout=STEP)
            gone = await alice.next_presence(lambda p: p["from"].bare == BOB
                                             and p["type"] == "unavailable")
            assert gone["from"].resource == "phone"
            # bob's presence changes no longer reach alice, nor hers bob.
            bob.send_presence(pstatus="busy")
            alice.send_presence(pstatus="lunch")
            await bob.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
            await alice.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
            for c, other in ((alice, BOB), (bob, ALICE)):
                try:
                    p = await c.next_presence(lambda p, o=other: p["from"].bare == o,
                                              timeout=1.0)
                    raise AssertionError(f"{c.boundjid} saw {p}")
                except asyncio.TimeoutError:
                    pass
            # Unblocking: both see each other again.
            await bob.plugin["xep_0191"].unblock([ALICE], timeout=STEP)
            back = await alice.next_presence(lambda p: p["from"].bare == BOB
                                             and p["type"] == "available")
            assert back["status"] == "busy"
            seen = await bob.next_presence(lambda p: p["from"].bare == ALICE
                                           and p["type"] == "available")
            assert seen["status"] == "lunch"
    run(scenario())
