"""PEP (XEP-0163) on Kith's PubSub core: a household shares nicknames and other personal
data with the people it chose, and nobody else.

Real slixmpp plugins drive it: xep_0163 (PEP), xep_0060 (PubSub), xep_0172 (nickname),
xep_0115 (entity caps, whose `+notify` features decide who gets notifications) and
xep_0223 (publish-options)."""

import asyncio

import pytest
from slixmpp.exceptions import IqError

from conftest import (DOMAIN, STEP, announce_caps, befriend, item_payloads, no_more_events,
                      online, pep_events, publish_options, run, stanza_error)

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
NICK = "http://jabber.org/protocol/nick"


async def nick_of(events: asyncio.Queue, who: str) -> str:
    kind, msg = await asyncio.wait_for(events.get(), STEP)
    assert kind == "publish", (kind, msg)
    assert msg["from"].bare == who and msg["pubsub_event"]["items"]["node"] == NICK
    return msg["pubsub_event"]["items"]["item"]["nick"]["nick"]


def test_contacts_see_a_new_nickname_and_strangers_do_not(kith):
    async def scenario():
        async with online(kith, "alice", "phone", presence=False) as alice, \
                online(kith, "bob", "phone", presence=False) as bob, \
                online(kith, "carol", "laptop", presence=False) as carol:
            for c in (alice, bob, carol):
                await announce_caps(c, "xep_0172")
            await befriend(alice, bob)
            ev = {c: pep_events(c) for c in (alice, bob, carol)}

            await alice.plugin["xep_0172"].publish_nick("Ally", timeout=STEP)
            assert await nick_of(ev[bob], ALICE) == "Ally"
            assert await nick_of(ev[alice], ALICE) == "Ally", "own devices are told too"
            await no_more_events(carol, ev[carol])

            # The default access model is presence: bob may read, carol may not.
            items = await bob.plugin["xep_0060"].get_items(ALICE, NICK, timeout=STEP)
            assert [p.text for _, p in item_payloads(items)] == ["Ally"]
            with pytest.raises(IqError) as e:
                await carol.plugin["xep_0060"].get_items(ALICE, NICK, timeout=STEP)
            assert stanza_error(e.value) == ("not-authorized", "presence-subscription-required")
    run(scenario())


def test_a_device_that_does_not_ask_for_a_node_gets_nothing_about_it(kith):
    """Filtered notifications (XEP-0163 §5): bob's laptop does not advertise nick+notify."""
    async def scenario():
        async with online(kith, "alice", "phone", presence=False) as alice, \
                online(kith, "bob", "phone", presence=False) as phone, \
                online(kith, "bob", "laptop", presence=False) as laptop:
            await announce_caps(alice, "xep_0172")
            await announce_caps(phone, "xep_0172")
            await announce_caps(laptop)  # caps, but no interest in nicknames
            await befriend(alice, phone)
            ev_phone, ev_laptop = pep_events(phone), pep_events(laptop)
            await alice.plugin["xep_0172"].publish_nick("Ally", timeout=STEP)
            assert await nick_of(ev_phone, ALICE) == "Ally"
            await no_more_events(laptop, ev_laptop)
    run(scenario())


def test_the_last_nickname_arrives_when_a_contact_comes_online(kith):
    async def scenario():
        async with online(kith, "alice", "phone", presence=False) as alice, \
                online(kith, "bob", "phone", presence=False) as bob:
            await announce_caps(alice, "xep_0172")
            await announce_caps(bob)
            await befriend(alice, bob)
            await alice.plugin["xep_0172"].publish_nick("Ally", timeout=STEP)
        # Later bob's laptop and alice's tablet come online: each is told at once.
        async with online(kith, "bob", "laptop", presence=False) as laptop, \
                online(kith, "alice", "tablet", presence=False) as tablet:
            ev_laptop, ev_tablet = pep_events(laptop), pep_events(tablet)
            await announce_caps(laptop, "xep_0172")
            assert await nick_of(ev_laptop, ALICE) == "Ally"
            await announce_caps(tablet, "xep_0172")
            assert await nick_of(ev_tablet, ALICE) == "Ally"
    run(scenario())


def test_items_ids_max_items_retract_and_delete(kith):
    async def scenario():
        node = "urn:example:notes"
        async with online(kith, "alice", "phone", presence=False) as alice, \
                online(kith, "bob", "phone", presence=False) as bob:
            await announce_caps(alice)
            alice.plugin["xep_0163"].add_interest(node)
            await announce_caps(bob)
            bob.plugin["xep_0163"].add_interest(node)
            await announce_caps(bob)
            await befriend(alice, bob)
            ev = pep_events(bob)
            pubsub = alice.plugin["xep_0060"]

            def note(text):
                from xml.etree import ElementTree as ET
                e = ET.Element(f"{{{node}}}note")
                e.text = text
                return e

            # max_items=3: the oldest items go as new ones arrive.
            opts = publish_options(max_items="3")
            ids = []
            for i in range(5):
                r = await pubsub.publish(None, node, payload=note(f"n{i}"), options=opts,
                                         timeout=STEP)
                ids.append(r["pubsub"]["publish"]["item"]["id"])
                kind, msg = await asyncio.wait_for(ev.get(), STEP)
                assert kind == "publish"
            assert all(ids) and len(set(ids)) == 5, "the server generates distinct ids"
            items = await pubsub.get_items(None, node, timeout=STEP)
            got = [i["id"] for i in items["pubsub"]["items"]]
            assert got == ids[2:], "three newest, oldest first"
            items = await pubsub.get_items(None, node, max_items=2, timeout=STEP)
            assert [i["id"] for i in items["pubsub"]["items"]] == ids[3:]
            items = await pubsub.get_items(None, node, item_ids=[ids[3], ids[0]], timeout=STEP)
            assert [i["id"] for i in items["pubsub"]["items"]] == [ids[3]]

            # Republishing an id replaces the item.
            await pubsub.publish(None, node, id=ids[2], payload=note("again"), timeout=STEP)
            await ev.get()
            items = await pubsub.get_items(None, node, timeout=STEP)
            assert [i["id"] for i in items["pubsub"]["items"]] == [ids[3], ids[4], ids[2]]

            # Retract with notify: bob hears of it.
            await pubsub.retract(None, node, ids[3], notify=True, timeout=STEP)
            kind, msg = await asyncio.wait_for(ev.get(), STEP)
            assert kind == "retract"
            assert msg["pubsub_event"]["items"]["retract"]["id"] == ids[3]
            with pytest.raises(IqError) as e:
                await pubsub.retract(None, node, ids[3], timeout=STEP)
            assert stanza_error(e.value)[0] == "item-not-found"

            # Only the owner writes.
            with pytest.raises(IqError) as e:
                await bob.plugin["xep_0060"].publish(ALICE, node, payload=note("x"), timeout=STEP)
            assert stanza_error(e.value)[0] == "forbidden"

            # Purge: bob is told, the node stays empty.
            await pubsub.purge(None, node, timeout=STEP)
            kind, msg = await asyncio.wait_for(ev.get(), STEP)
            assert kind == "purge"
            items = await pubsub.get_items(None, node, timeout=STEP)
            assert item_payloads(items) == []
            await pubsub.publish(None, node, id="after", payload=note("new"), timeout=STEP)
            await ev.get()

            # Delete: bob is told, the items are gone.
            await pubsub.delete_node(None, node, timeout=STEP)
            kind, msg = await asyncio.wait_for(ev.get(), STEP)
            assert kind == "delete" and msg["pubsub_event"]["delete"]["node"] == node
            with pytest.raises(IqError) as e:
                await pubsub.get_items(None, node, timeout=STEP)
            assert stanza_error(e.value)[0] == "item-not-found"
    run(scenario())


def test_access_models_open_presence_roster_whitelist(kith):
    async def scenario():
        async with online(kith, "alice", "phone", presence=False) as alice, \
                online(kith, "bob", "phone", presence=False) as bob, \
                online(kith, "carol", "laptop", presence=False) as carol:
            for c in (alice, bob, carol):
                await announce_caps(c)
            await befriend(alice, bob)
            pubsub = alice.plugin["xep_0060"]
            from xml.etree import ElementTree as ET
            for model in ("open", "presence", "roster", "whitelist"):
                opts = {"access_model": model}
                if model == "roster":
                    opts["roster_groups_allowed"] = "family"
                await pubsub.publish(None, f"urn:example:{model}", id="1",
                                     payload=ET.Element(f"{{urn:example:{model}}}x"),
                                     options=publish_options(**opts), timeout=STEP)

            async def readable(reader, model):
                try:
                    await reader.plugin["xep_0060"].get_items(ALICE, f"urn:example:{model}",
                                                              timeout=STEP)
                    return True
                except IqError as e:
                    return stanza_error(e)

            # alice reads all of her own.
            for model in ("open", "presence", "roster", "whitelist"):
                assert await readable(alice, model) is True, model
            # carol, a stranger: only the open node.
            assert await readable(carol, "open") is True
            assert await readable(carol, "presence") == ("not-authorized",
                                                          "presence-subscription-required")
            assert await readable(carol, "roster") == ("not-authorized", "not-in-roster-group")
            assert await readable(carol, "whitelist") == ("not-allowed", "closed-node")
            # bob, a contact but not (yet) in the family group.
            assert await readable(bob, "presence") is True
            assert await readable(bob, "roster") == ("not-authorized", "not-in-roster-group")
            assert await readable(bob, "whitelist") == ("not-allowed", "closed-node")
            await alice.update_roster(BOB, groups=["family"], timeout=STEP)
            assert await readable(bob, "roster") is True

            # disco#items shows each reader only the nodes it may see.
            async def nodes(reader):
                r = await reader.plugin["xep_0030"].get_items(jid=ALICE, timeout=STEP)
                return {i[1] for i in r["disco_items"]["items"]}
            assert await nodes(carol) == {"urn:example:open"}
            # ... and disco#info on a node answers only for those too (XEP-0060 §5.3).
            info = await carol.plugin["xep_0030"].get_info(jid=ALICE, node="urn:example:open",
                                                           timeout=STEP)
            assert ("pubsub", "leaf") in {(i[0], i[1]) for i in info["disco_info"]["identities"]}
            with pytest.raises(IqError) as e:
                await carol.plugin["xep_0030"].get_info(jid=ALICE, node="urn:example:presence",
                                                        timeout=STEP)
            assert stanza_error(e.value)[0] == "item-not-found"
            assert await nodes(bob) == {"urn:example:open", "urn:example:presence",
                                        "urn:example:roster"}
    run(scenario())


def test_publish_options_that_contradict_the_node_fail_the_precondition(kith):
    """XEP-0060 §7.1.5: <conflict/> with <precondition-not-met/>; nothing is published."""
    async def scenario():
        async with online(kith, "alice", "phone") as alice:
            alice.register_plugin("xep_0060")
            pubsub = alice.plugin["xep_0060"]
            alice.register_plugin("xep_0172")
            await alice.plugin["xep_0172"].publish_nick("Ally", timeout=STEP)
            # The node exists with the presence model: asking for open fails...
            with pytest.raises(IqError) as e:
                await alice.plugin["xep_0172"].publish_nick(
                    "Other", options=publish_options(access_model="open"), timeout=STEP)
            assert stanza_error(e.value) == ("conflict", "precondition-not-met")
            items = await pubsub.get_items(None, NICK, timeout=STEP)
            assert [p.text for _, p in item_payloads(items)] == ["Ally"]
            # ... options that match the node are fine.
            await alice.plugin["xep_0172"].publish_nick(
                "Al", options=publish_options(access_model="presence", persist_items="1"),
                timeout=STEP)
            # Bad values are refused, not stored.
            with pytest.raises(IqError) as e:
                await pubsub.publish(None, "urn:example:new", payload=_el("urn:example:new"),
                                     options=publish_options(access_model="authorize"),
                                     timeout=STEP)
            assert stanza_error(e.value)[0] == "not-acceptable"

            # The node configuration form shows and changes the same settings.
            cfg = await pubsub.get_node_config(None, NICK, timeout=STEP)
            values = cfg["pubsub_owner"]["configure"]["form"].get_values()
            assert values["pubsub#access_model"] == "presence"
    run(scenario())


def _el(ns, name="x"):
    from xml.etree import ElementTree as ET
    return ET.Element(f"{{{ns}}}{name}")


def test_max_items_bounds_and_configuration(kith_factory):
    """Bounds from the config: nodes per account, items per node, item size."""
    kith = kith_factory(limits={"pep_nodes": 3, "pep_items": 5, "pep_item_size": 1024})
    kith.start()
    kith.add_user("alice")

    async def scenario():
        async with online(kith, "alice", "phone") as alice:
            alice.register_plugin("xep_0060")
            pubsub = alice.plugin["xep_0060"]
            for i in range(3):
                await pubsub.publish(None, f"urn:example:n{i}", payload=_el(f"urn:example:n{i}"),
                                     timeout=STEP)
            with pytest.raises(IqError) as e:
                await pubsub.publish(None, "urn:example:n3", payload=_el("urn:example:n3"),
                                     timeout=STEP)
            assert stanza_error(e.value) == ("not-allowed", "max-nodes-exceeded")

            big = _el("urn:example:n0")
            big.text = "x" * 2000
            with pytest.raises(IqError) as e:
                await pubsub.publish(None, "urn:example:n0", payload=big, timeout=STEP)
            assert stanza_error(e.value) == ("not-acceptable", "payload-too-big")

            # Zero items is refused; a number over the bound means the bound (Converse.js
            # asks 9999 for its bookmarks), so it differs from n0's default: precondition.
            with pytest.raises(IqError) as e:
                await pubsub.publish(None, "urn:example:n0", payload=_el("urn:example:n0"),
                                     options=publish_options(max_items="0"), timeout=STEP)
            assert stanza_error(e.value)[0] == "not-acceptable"
            with pytest.raises(IqError) as e:
                await pubsub.publish(None, "urn:example:n0", payload=_el("urn:example:n0"),
                                     options=publish_options(max_items="6"), timeout=STEP)
            assert stanza_error(e.value) == ("conflict", "precondition-not-met")

            # "max" means the server's bound (5); configure it, fill it, then lower it.
            from slixmpp.plugins.xep_0004.stanza import Form
            form = Form()
            form["type"] = "submit"
            form.add_field(var="FORM_TYPE", ftype="hidden",
                           value="http://jabber.org/protocol/pubsub#node_config")
            form.add_field(var="pubsub#max_items", value="max")
            await pubsub.set_node_config(None, "urn:example:n1", form, timeout=STEP)
            for i in range(7):
                await pubsub.publish(None, "urn:example:n1", id=f"i{i}",
                                     payload=_el("urn:example:n1"), timeout=STEP)
            items = await pubsub.get_items(None, "urn:example:n1", timeout=STEP)
            assert [i["id"] for i in items["pubsub"]["items"]] == [f"i{i}" for i in range(2, 7)]
            # 9999 is the bound too: the same configuration, so publish-options agree.
            await pubsub.publish(None, "urn:example:n1", id="i6", payload=_el("urn:example:n1"),
                                 options=publish_options(max_items="9999"), timeout=STEP)
            form.get_fields()["pubsub#max_items"]["value"] = "2"
            await pubsub.set_node_config(None, "urn:example:n1", form, timeout=STEP)
            items = await pubsub.get_items(None, "urn:example:n1", timeout=STEP)
            assert [i["id"] for i in items["pubsub"]["items"]] == ["i5", "i6"]
    run(scenario())


def test_account_disco_advertises_pep(kith):
    async def scenario():
        async with online(kith, "alice", "phone") as alice:
            info = await alice.plugin["xep_0030"].get_info(jid=ALICE, timeout=STEP)
            ids = {(i[0], i[1]) for i in info["disco_info"]["identities"]}
            feats = set(info["disco_info"]["features"])
            assert ("pubsub", "pep") in ids
            for f in ("publish", "publish-options", "retrieve-items", "auto-create",
                      "persistent-items", "access-presence", "access-open", "access-roster",
                      "access-whitelist", "last-published", "filtered-notifications",
                      "multi-items", "item-ids", "delete-nodes", "retract-items"):
                assert f"http://jabber.org/protocol/pubsub#{f}" in feats, f
    run(scenario())


def test_xep0390_capabilities_drive_notifications_too(kith, test_ca):
    """A client announcing XEP-0390 caps (`urn:xmpp:caps`, SHA-256) is asked for the
    disco#info behind its hash and then gets the notifications its features ask for."""
    import base64
    import hashlib
    import xml.etree.ElementTree as ET

    from conftest import NS_CLIENT, RawXmpp

    node = "urn:example:mood"
    disco = "http://jabber.org/protocol/disco#info"
    features = [disco, f"{node}+notify"]
    identity = ("client", "phone", "", "Raw")
    f = b"".join(sorted(x.encode() + b"\x1f" for x in features)) + b"\x1c"
    i = b"".join(p.encode() + b"\x1f" for p in identity) + b"\x1e" + b"\x1c"
    h = base64.b64encode(hashlib.sha256(f + i + b"\x1c").digest()).decode()

    ctx = test_ca.client_context()
    raw = RawXmpp(kith.c2s_port)
    raw.login(ctx, "alice", "raw")
    raw.send("<presence><c xmlns='urn:xmpp:caps'><hash xmlns='urn:xmpp:hashes:2' "
             f"algo='sha-256'>{h}</hash></c></presence>")
    while True:
        q = raw.element()
        if q.tag == f"{{{NS_CLIENT}}}iq":
            break
    assert q.get("type") == "get" and q.get("from") == DOMAIN
    query = q.find(f"{{{disco}}}query")
    assert query is not None and query.get("node") == f"urn:xmpp:caps#sha-256.{h}"
    feats = "".join(f"<feature var='{x}'/>" for x in features)
    raw.send(f"<iq type='result' id='{q.get('id')}' to='{DOMAIN}'>"
             f"<query xmlns='{disco}' node='{query.get('node')}'>"
             f"<identity category='client' type='phone' name='Raw'/>{feats}</query></iq>")
    # A round trip: the answer has been handled once the pong comes back.
    raw.send("<iq type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>")
    while raw.element().get("id") != "ping1":
        pass

    pub = RawXmpp(kith.c2s_port)
    pub.login(ctx, "alice", "desk")
    pub.send("<iq type='set' id='pub1'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
             f"<publish node='{node}'><item id='now'><mood xmlns='{node}'>happy</mood></item>"
             "</publish></pubsub></iq>")
    assert pub.expect(f"{{{NS_CLIENT}}}iq").get("type") == "result"
    while True:
        m = raw.element()
        if m.tag == f"{{{NS_CLIENT}}}message":
            break
    ev = "http://jabber.org/protocol/pubsub#event"
    item = m.find(f"{{{ev}}}event/{{{ev}}}items/{{{ev}}}item")
    assert item is not None and item.get("id") == "now"
    assert item.find(f"{{{node}}}mood").text == "happy"
    for r in (raw, pub):
        r.close()


def test_a_new_contact_gets_the_last_nickname_at_once(kith):
    """XEP-0163 auto-subscription: when alice accepts bob, bob's online devices that asked
    for nicknames get hers without waiting for their next login."""
    async def scenario():
        async with online(kith, "alice", "phone", presence=False) as alice, \
                online(kith, "bob", "phone", presence=False) as bob:
            await announce_caps(alice, "xep_0172")
            await announce_caps(bob, "xep_0172")
            await alice.plugin["xep_0172"].publish_nick("Ally", timeout=STEP)
            ev = pep_events(bob)
            await befriend(alice, bob)
            assert await nick_of(ev, ALICE) == "Ally"
    run(scenario())


def test_a_large_node_is_answered_in_a_bounded_reply(kith_factory):
    """An items answer carries at most 1 MiB of payload: the newest items, oldest dropped."""
    kith = kith_factory(limits={"pep_items": 20})
    kith.start()
    kith.add_user("alice")

    async def scenario():
        async with online(kith, "alice", "phone") as alice:
            alice.register_plugin("xep_0060")
            pubsub = alice.plugin["xep_0060"]
            node = "urn:example:photos"
            for i in range(10):
                big = _el(node)
                big.text = f"{i}" * 120_000
                await pubsub.publish(None, node, id=f"p{i}", payload=big,
                                     options=publish_options(max_items="max"), timeout=STEP)
            items = await pubsub.get_items(None, node, timeout=STEP)
            ids = [i for i, _ in item_payloads(items)]
            assert 1 <= len(ids) < 10 and ids == [f"p{i}" for i in range(10 - len(ids), 10)]
            assert sum(len(p.text) for _, p in item_payloads(items)) <= 1024 * 1024
    run(scenario())


def test_a_capability_hash_that_does_not_verify_is_never_cached(kith, test_ca):
    """XEP-0115 §5.4: a client answering with features that do not hash to its `ver` is
    believed for itself only; the next client claiming that `ver` is asked again, while a
    verified `ver` is asked once for everyone."""
    from conftest import NS_CLIENT, NS_DISCO_INFO, RawXmpp

    def login(user, resource):
        raw = RawXmpp(kith.c2s_port)
        raw.login(test_ca.client_context(), user, resource)
        return raw

    def claim(raw, ver):
        raw.send(f"<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
                 f"node='http://raw.example' ver='{ver}'/></presence>"
                 "<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        asked = None
        while True:
            el = raw.element()
            if el.tag == f"{{{NS_CLIENT}}}iq" and el.get("id") == "sync":
                return asked
            if el.tag == f"{{{NS_CLIENT}}}iq" and el.find(f"{{{NS_DISCO_INFO}}}query") is not None:
                asked = el

    def answer(raw, q, features):
        node = q.find(f"{{{NS_DISCO_INFO}}}query").get("node")
        feats = "".join(f"<feature var='{f}'/>" for f in features)
        raw.send(f"<iq type='result' id='{q.get('id')}' to='{DOMAIN}'>"
                 f"<query xmlns='{NS_DISCO_INFO}' node='{node}'>"
                 f"<identity category='client' type='pc' name='Raw'/>{feats}</query></iq>")

    # The XEP-0115 example: 'client/pc//Exodus 0.9.1' with these features.
    good_features = ["http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#info",
                     "http://jabber.org/protocol/disco#items", "http://jabber.org/protocol/muc"]
    good_ver = "QgayPKawpkPSDYmwT/WM94uAlu0="

    liar = login("alice", "liar")
    q = claim(liar, good_ver)
    assert q is not None, "an unknown hash is asked for"
    answer(liar, q, ["urn:example:spy+notify"])  # does not hash to good_ver
    second = login("bob", "honest")
    q = claim(second, good_ver)
    assert q is not None, "the lie was not cached: bob's client is asked itself"
    # bob answers truthfully (identity name as in the XEP example).
    node = q.find(f"{{{NS_DISCO_INFO}}}query").get("node")
    feats = "".join(f"<feature var='{f}'/>" for f in good_features)
    second.send(f"<iq type='result' id='{q.get('id')}' to='{DOMAIN}'>"
                f"<query xmlns='{NS_DISCO_INFO}' node='{node}'>"
                f"<identity category='client' type='pc' name='Exodus 0.9.1'/>{feats}</query></iq>")
    second.send("<iq type='get' id='sync2'><ping xmlns='urn:xmpp:ping'/></iq>")
    while second.element().get("id") != "sync2":
        pass
    third = login("carol", "laptop")
    assert claim(third, good_ver) is None, "a verified hash is asked only once"
    for r in (liar, second, third):
        r.close()


def test_coming_back_from_unavailable_brings_the_last_items_again(kith):
    async def scenario():
        async with online(kith, "alice", "phone", presence=False) as alice, \
                online(kith, "bob", "phone", presence=False) as bob:
            await announce_caps(alice, "xep_0172")
            await announce_caps(bob, "xep_0172")
            await befriend(alice, bob)
            ev = pep_events(bob)
            await alice.plugin["xep_0172"].publish_nick("Ally", timeout=STEP)
            assert await nick_of(ev, ALICE) == "Ally"
            bob.send_presence(ptype="unavailable")
            bob.send_presence()
            assert await nick_of(ev, ALICE) == "Ally"
            # A mere status change is no reason to send it again.
            bob.send_presence(pstatus="busy")
            await no_more_events(bob, ev)
    run(scenario())


def test_create_and_configure_and_the_default_configuration(kith):
    async def scenario():
        async with online(kith, "alice", "phone") as alice:
            alice.register_plugin("xep_0060")
            pubsub = alice.plugin["xep_0060"]
            default = await pubsub.get_node_config(None, timeout=STEP)
            values = default["pubsub_owner"]["default"]["form"].get_values()
            assert values["pubsub#access_model"] == "presence"
            assert values["pubsub#max_items"] == "1"

            from slixmpp.plugins.xep_0004.stanza import Form
            form = Form()
            form["type"] = "submit"
            form.add_field(var="FORM_TYPE", ftype="hidden",
                           value="http://jabber.org/protocol/pubsub#node_config")
            form.add_field(var="pubsub#access_model", value="open")
            form.add_field(var="pubsub#max_items", value="10")
            await pubsub.create_node(None, "urn:example:made", config=form, timeout=STEP)
            cfg = await pubsub.get_node_config(None, "urn:example:made", timeout=STEP)
            values = cfg["pubsub_owner"]["configure"]["form"].get_values()
            assert (values["pubsub#access_model"], values["pubsub#max_items"]) == ("open", "10")
            with pytest.raises(IqError) as e:
                await pubsub.create_node(None, "urn:example:made", timeout=STEP)
            assert stanza_error(e.value)[0] == "conflict"
            # A node created empty has no items yet, and says so.
            items = await pubsub.get_items(None, "urn:example:made", timeout=STEP)
            assert item_payloads(items) == []
    run(scenario())
