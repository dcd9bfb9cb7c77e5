"""What the server answers: disco, ping, version, time, vCards, and nothing it doesn't know."""

import datetime as dt

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from conftest import DOMAIN, STEP, online, run

SERVER_FEATURES = [
    "http://jabber.org/protocol/disco#info",
    "http://jabber.org/protocol/disco#items",
    "urn:xmpp:ping",
    "jabber:iq:version",
    "urn:xmpp:time",
    "vcard-temp",
]


def test_disco_info_on_the_server_lists_what_it_does(kith):
    async def scenario():
        async with online(kith, "alice") as alice:
            iq = await alice.plugin["xep_0030"].get_info(jid=DOMAIN, local=False, timeout=STEP)
            info = iq["disco_info"]
            features = set(info["features"])
            for f in SERVER_FEATURES:
                assert f in features, f"{f} not in server disco#info: {sorted(features)}"
            identities = {(i[0], i[1]) for i in info["identities"]}
            assert ("server", "im") in identities, identities
            items = await alice.plugin["xep_0030"].get_items(jid=DOMAIN, local=False,
                                                             timeout=STEP)
            assert items["type"] == "result"
    run(scenario())


def test_disco_info_on_an_account(kith):
    async def scenario():
        async with online(kith, "alice") as alice:
            iq = await alice.plugin["xep_0030"].get_info(jid=JID(f"alice@{DOMAIN}"), local=False,
                                                         timeout=STEP)
            identities = {(i[0], i[1]) for i in iq["disco_info"]["identities"]}
            assert ("account", "registered") in identities, identities
    run(scenario())


def test_ping_version_and_time(kith):
    async def scenario():
        async with online(kith, "alice") as alice:
            rtt = await alice.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
            assert 0 <= rtt < STEP
            v = await alice.plugin["xep_0092"].get_version(JID(DOMAIN), timeout=STEP)
            assert v["type"] == "result"
            assert v["software_version"]["name"], "version answer without a name"
            assert v["software_version"]["version"]
            t = await alice.plugin["xep_0202"].get_entity_time(JID(DOMAIN), timeout=STEP)
            # Parsed by hand: slixmpp 1.17 appends a second 'Z' to <utc/> and chokes.
            text = t.xml.find("{urn:xmpp:time}time/{urn:xmpp:time}utc").text
            utc = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            tzo = t.xml.find("{urn:xmpp:time}time/{urn:xmpp:time}tzo").text
            assert tzo == "Z" or (tzo[0] in "+-" and tzo[3] == ":"), tzo
            now = dt.datetime.now(dt.timezone.utc)
            assert abs((utc - now).total_seconds()) < 60, f"server time {utc} vs {now}"
    run(scenario())


def test_alice_publishes_her_vcard_and_bob_reads_it(kith):
    async def scenario():
        async with online(kith, "alice") as alice, online(kith, "bob") as bob:
            xep54 = alice.plugin["xep_0054"]
            card = xep54.make_vcard()
            card["FN"] = "Alice Liddell"
            card["NICKNAME"] = "al"
            card["NOTE"] = "Ünïcode ✓"
            await xep54.publish_vcard(card, timeout=STEP)

            mine = await xep54.get_vcard(JID(f"alice@{DOMAIN}"), local=False, timeout=STEP)
            assert mine["vcard_temp"]["FN"] == "Alice Liddell"
            theirs = await bob.plugin["xep_0054"].get_vcard(JID(f"alice@{DOMAIN}"), local=False,
                                                            timeout=STEP)
            assert theirs["vcard_temp"]["FN"] == "Alice Liddell"
            nick = theirs["vcard_temp"]["NICKNAME"]
            assert nick in ("al", ["al"]), nick
            assert theirs["vcard_temp"]["NOTE"] == "Ünïcode ✓"
            # bob has not published one: an empty vCard (or item-not-found), not a crash.
            try:
                empty = await bob.plugin["xep_0054"].get_vcard(JID(f"bob@{DOMAIN}"), local=False,
                                                               timeout=STEP)
                assert not empty["vcard_temp"]["FN"]
            except IqError as e:
                assert e.iq["error"]["condition"] == "item-not-found"
            # Nobody writes someone else's vCard.
            forged = bob.plugin["xep_0054"].make_vcard()
            forged["FN"] = "Mallory"
            with pytest.raises(IqError):
                await bob.plugin["xep_0054"].publish_vcard(forged, jid=JID(f"alice@{DOMAIN}"),
                                                           timeout=STEP)
            again = await xep54.get_vcard(JID(f"alice@{DOMAIN}"), local=False, timeout=STEP)
            assert again["vcard_temp"]["FN"] == "Alice Liddell"
    run(scenario())


@pytest.mark.parametrize("to", [DOMAIN, f"bob@{DOMAIN}"])
def test_unknown_iq_is_service_unavailable(kith, to):
    async def scenario():
        async with online(kith, "alice") as alice:
            iq = alice.make_iq_get(ito=to)
            iq.append(ET.Element("{urn:example:no-such-protocol}query"))
            with pytest.raises(IqError) as err:
                await iq.send(timeout=STEP)
            assert err.value.iq["error"]["condition"] == "service-unavailable"
            assert err.value.iq["error"]["type"] == "cancel"
            # Still connected and served.
            await alice.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
    run(scenario())
