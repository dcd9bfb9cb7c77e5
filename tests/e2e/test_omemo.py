"""OMEMO key distribution through PEP: device lists and key bundles of OMEMO 0.3
(`eu.siacs.conversations.axolotl.*`, what Conversations, Monal, Gajim and Dino speak
today) and OMEMO 2 (`urn:xmpp:omemo:2:*`), published with access model `open` so that
anyone who wants to write to alice can fetch her keys, and device-list changes notified
to contacts who asked (`+notify`).

The clients here are slixmpp with its PubSub plugins publishing the node layouts by hand,
so that each server-side rule is checked on its own; test_omemo_interop.py runs a real
OMEMO implementation (slixmpp-omemo) end to end."""

import asyncio
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from conftest import (DOMAIN, STEP, announce_caps, befriend, item_payloads, online,
                      pep_events, publish_options, run, stanza_error)

ALICE = f"alice@{DOMAIN}"
NS_OLD = "eu.siacs.conversations.axolotl"
OLD_DEVICES = f"{NS_OLD}.devicelist"
NS_2 = "urn:xmpp:omemo:2"
DEVICES_2 = f"{NS_2}:devices"
BUNDLES_2 = f"{NS_2}:bundles"


def devicelist(*ids) -> ET.Element:
    lst = ET.Element(f"{{{NS_OLD}}}list")
    for i in ids:
        ET.SubElement(lst, f"{{{NS_OLD}}}device", {"id": str(i)})
    return lst


def old_bundle(device: int) -> ET.Element:
    b = ET.Element(f"{{{NS_OLD}}}bundle")
    ET.SubElement(b, f"{{{NS_OLD}}}signedPreKeyPublic", {"signedPreKeyId": "1"}).text = \
        "BQ" + "A" * 42
    ET.SubElement(b, f"{{{NS_OLD}}}signedPreKeySignature").text = "c2ln" * 22
    ET.SubElement(b, f"{{{NS_OLD}}}identityKey").text = f"BQ{device:042d}"
    pre = ET.SubElement(b, f"{{{NS_OLD}}}prekeys")
    for k in range(1, 101):
        ET.SubElement(pre, f"{{{NS_OLD}}}preKeyPublic", {"preKeyId": str(k)}).text = \
            "BQ" + "B" * 42
    return b


def devices2(*ids) -> ET.Element:
    d = ET.Element(f"{{{NS_2}}}devices")
    for i in ids:
        ET.SubElement(d, f"{{{NS_2}}}device", {"id": str(i), "label": f"device {i}"})
    return d


def bundle2(device: int) -> ET.Element:
    b = ET.Element(f"{{{NS_2}}}bundle")
    ET.SubElement(b, f"{{{NS_2}}}spk", {"id": "1"}).text = "A" * 43 + "="
    ET.SubElement(b, f"{{{NS_2}}}spks").text = "B" * 86 + "=="
    ET.SubElement(b, f"{{{NS_2}}}ik").text = f"{device:043d}="
    pks = ET.SubElement(b, f"{{{NS_2}}}prekeys")
    for k in range(1, 101):
        ET.SubElement(pks, f"{{{NS_2}}}pk", {"id": str(k)}).text = "C" * 43 + "="
    return b


OPEN = dict(access_model="open")


def test_omemo_0_3_device_list_and_bundles(kith):
    async def scenario():
        async with online(kith, "alice", "phone", presence=False) as alice, \
                online(kith, "bob", "phone", presence=False) as bob, \
                online(kith, "carol", "laptop") as carol:
            await announce_caps(alice)
            await announce_caps(bob)
            bob.plugin["xep_0163"].add_interest(OLD_DEVICES)
            await announce_caps(bob)
            await befriend(alice, bob)
            events = pep_events(bob)
            pubsub = alice.plugin["xep_0060"]

            await pubsub.publish(None, OLD_DEVICES, id="current", payload=devicelist(1111),
                                 options=publish_options(**OPEN), timeout=STEP)
            await pubsub.publish(None, f"{NS_OLD}.bundles:1111", id="current",
                                 payload=old_bundle(1111),
                                 options=publish_options(**OPEN), timeout=STEP)
            kind, msg = await asyncio.wait_for(events.get(), STEP)
            assert kind == "publish"
            assert msg["pubsub_event"]["items"]["node"] == OLD_DEVICES

            # A second device joins: the list is replaced and bob is told.
            await pubsub.publish(None, OLD_DEVICES, id="current",
                                 payload=devicelist(1111, 2222),
                                 options=publish_options(**OPEN), timeout=STEP)
            kind, msg = await asyncio.wait_for(events.get(), STEP)
            ids = [d.get("id") for d in
                   msg["pubsub_event"]["items"]["item"]["payload"]]
            assert ids == ["1111", "2222"]

            # carol is no contact of alice's, yet may fetch her keys to write to her.
            carol.register_plugin("xep_0060")
            r = await carol.plugin["xep_0060"].get_items(ALICE, OLD_DEVICES, timeout=STEP)
            [(item_id, lst)] = item_payloads(r)
            assert item_id == "current" and len(lst) == 2
            r = await carol.plugin["xep_0060"].get_items(ALICE, f"{NS_OLD}.bundles:1111",
                                                         max_items=1, timeout=STEP)
            [(_, bundle)] = item_payloads(r)
            assert len(bundle.find(f"{{{NS_OLD}}}prekeys")) == 100
            # A bundle that was never published: item-not-found.
            with pytest.raises(IqError) as e:
                await carol.plugin["xep_0060"].get_items(ALICE, f"{NS_OLD}.bundles:9",
                                                         timeout=STEP)
            assert stanza_error(e.value)[0] == "item-not-found"

            # An encrypted message passes the server untouched.
            msg = carol.make_message(mto=ALICE, mtype="chat",
                                     mbody="I sent you an OMEMO encrypted message")
            enc = ET.SubElement(msg.xml, f"{{{NS_OLD}}}encrypted")
            header = ET.SubElement(enc, f"{{{NS_OLD}}}header", {"sid": "3333"})
            ET.SubElement(header, f"{{{NS_OLD}}}key", {"rid": "1111"}).text = "a2V5"
            ET.SubElement(header, f"{{{NS_OLD}}}iv").text = "aXY="
            ET.SubElement(enc, f"{{{NS_OLD}}}payload").text = "c2VjcmV0"
            msg.send()
            got = await alice.next_message()
            enc = got.xml.find(f"{{{NS_OLD}}}encrypted")
            assert enc is not None
            assert enc.find(f"{{{NS_OLD}}}payload").text == "c2VjcmV0"
            assert enc.find(f"{{{NS_OLD}}}header/{{{NS_OLD}}}key").get("rid") == "1111"
    run(scenario())


def test_omemo_2_devices_and_bundles(kith):
    async def scenario():
        async with online(kith, "alice", "phone") as alice, \
                online(kith, "carol", "laptop") as carol:
            for c in (alice, carol):
                c.register_plugin("xep_0060")
            pubsub = alice.plugin["xep_0060"]
            await pubsub.publish(None, DEVICES_2, id="current", payload=devices2(1, 2),
                                 options=publish_options(**OPEN), timeout=STEP)
            # OMEMO 2 keeps every device's bundle as one item of one node.
            bundle_opts = publish_options(max_items="max", **OPEN)
            for device in (1, 2):
                await pubsub.publish(None, BUNDLES_2, id=str(device), payload=bundle2(device),
                                     options=bundle_opts, timeout=STEP)
            r = await carol.plugin["xep_0060"].get_items(ALICE, BUNDLES_2, item_ids=["2"],
                                                         timeout=STEP)
            [(item_id, b)] = item_payloads(r)
            assert item_id == "2" and b.find(f"{{{NS_2}}}ik").text == f"{2:043d}="
            r = await carol.plugin["xep_0060"].get_items(ALICE, BUNDLES_2, timeout=STEP)
            assert [i for i, _ in item_payloads(r)] == ["1", "2"]
            r = await carol.plugin["xep_0060"].get_items(ALICE, DEVICES_2, timeout=STEP)
            [(_, d)] = item_payloads(r)
            assert [x.get("id") for x in d] == ["1", "2"]
            # Publishing the bundle node with a different access model is refused.
            with pytest.raises(IqError) as e:
                await pubsub.publish(None, BUNDLES_2, id="3", payload=bundle2(3),
                                     options=publish_options(access_model="presence"),
                                     timeout=STEP)
            assert stanza_error(e.value) == ("conflict", "precondition-not-met")
    run(scenario())


def test_a_stranger_can_follow_a_device_list_by_subscribing(kith):
    """XEP-0060 §6.1 explicit subscription: carol does not share presence with alice, yet
    follows her (open) OMEMO device list; she cannot follow what she may not read."""
    async def scenario():
        async with online(kith, "alice", "phone") as alice, \
                online(kith, "carol", "laptop") as carol:
            for c in (alice, carol):
                c.register_plugin("xep_0060")
            pubsub = alice.plugin["xep_0060"]
            await pubsub.publish(None, OLD_DEVICES, id="current", payload=devicelist(1),
                                 options=publish_options(**OPEN), timeout=STEP)
            events = pep_events(carol)
            r = await carol.plugin["xep_0060"].subscribe(ALICE, OLD_DEVICES, timeout=STEP)
            assert r["pubsub"]["subscription"]["subscription"] == "subscribed"
            kind, msg = await asyncio.wait_for(events.get(), STEP)  # the last item at once
            assert kind == "publish"

            await pubsub.publish(None, OLD_DEVICES, id="current", payload=devicelist(1, 2),
                                 options=publish_options(**OPEN), timeout=STEP)
            kind, msg = await asyncio.wait_for(events.get(), STEP)
            assert [d.get("id") for d in msg["pubsub_event"]["items"]["item"]["payload"]] \
                == ["1", "2"]

            await carol.plugin["xep_0060"].unsubscribe(ALICE, OLD_DEVICES, timeout=STEP)
            await pubsub.publish(None, OLD_DEVICES, id="current", payload=devicelist(2),
                                 options=publish_options(**OPEN), timeout=STEP)
            await carol.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
            assert events.empty(), "no news after unsubscribing"
            with pytest.raises(IqError) as e:
                await carol.plugin["xep_0060"].unsubscribe(ALICE, OLD_DEVICES, timeout=STEP)
            assert stanza_error(e.value) == ("unexpected-request", "not-subscribed")

            # A presence-model node cannot be followed by a stranger.
            await pubsub.publish(None, "urn:example:private", payload=ET.Element(
                "{urn:example:private}x"), timeout=STEP)
            with pytest.raises(IqError) as e:
                await carol.plugin["xep_0060"].subscribe(ALICE, "urn:example:private",
                                                         timeout=STEP)
            assert stanza_error(e.value) == ("not-authorized", "presence-subscription-required")
    run(scenario())
