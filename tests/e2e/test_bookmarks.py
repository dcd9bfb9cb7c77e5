"""Group-chat bookmarks and private storage: alice's old laptop (legacy bookmarks, XEP-0048
in private XML, XEP-0049) and her new phone (bookmarks 2, XEP-0402) see the same list,
because Kith keeps one list — the `urn:xmpp:bookmarks:1` PEP node — and translates
(`urn:xmpp:bookmarks:1#compat`)."""

import asyncio
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from conftest import (DOMAIN, STEP, announce_caps, item_payloads, online, pep_events,
                      publish_options, run, stanza_error)

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
NS_B2 = "urn:xmpp:bookmarks:1"
NS_PRIVATE = "jabber:iq:private"


def conferences(iq) -> dict:
    """{room: conference element} of a bookmarks 2 items result."""
    return {i: p for i, p in item_payloads(iq)}


def test_legacy_and_bookmarks2_clients_share_one_list(kith):
    async def scenario():
        async with online(kith, "alice", "phone", presence=False) as phone, \
                online(kith, "alice", "laptop") as laptop, \
                online(kith, "bob", "phone") as bob:
            phone.register_plugin("xep_0402")
            await announce_caps(phone)
            phone.plugin["xep_0163"].add_interest(NS_B2)
            await announce_caps(phone)
            events = pep_events(phone)
            info = await phone.plugin["xep_0030"].get_info(jid=ALICE, timeout=STEP)
            assert f"{NS_B2}#compat" in info["disco_info"]["features"]

            # The old laptop stores legacy bookmarks in private XML.
            laptop.register_plugin("xep_0048")
            legacy = laptop.plugin["xep_0048"]
            marks = legacy.stanza.Bookmarks()
            marks.add_conference(f"tea@muc.{DOMAIN}", "al", name="Tea", autojoin=True)
            marks.add_conference(f"book@muc.{DOMAIN}", "alice", name="Book club",
                                 password="secret")
            marks.add_url("https://example.org/recipes", name="Recipes")
            await legacy.set_bookmarks(marks, method="xep_0049", timeout=STEP)

            # The phone is told of both rooms, as bookmarks 2 items.
            told = set()
            for _ in range(2):
                kind, msg = await asyncio.wait_for(events.get(), STEP)
                assert kind == "publish"
                told.add(msg["pubsub_event"]["items"]["item"]["id"])
            assert told == {f"tea@muc.{DOMAIN}", f"book@muc.{DOMAIN}"}
            got = conferences(await phone.plugin["xep_0060"].get_items(None, NS_B2,
                                                                       timeout=STEP))
            tea = got[f"tea@muc.{DOMAIN}"]
            assert tea.get("autojoin") == "true" and tea.get("name") == "Tea"
            assert tea.find(f"{{{NS_B2}}}nick").text == "al"
            assert got[f"book@muc.{DOMAIN}"].find(f"{{{NS_B2}}}password").text == "secret"

            # Bookmarks are private: the node's access model is whitelist.
            bob.register_plugin("xep_0060")
            with pytest.raises(IqError) as e:
                await bob.plugin["xep_0060"].get_items(ALICE, NS_B2, timeout=STEP)
            assert stanza_error(e.value) == ("not-allowed", "closed-node")

            # The phone adds a room the bookmarks 2 way; the laptop's legacy read shows it,
            # and the URL bookmark it stored is still there.
            conf = ET.Element(f"{{{NS_B2}}}conference", {"name": "Garden", "autojoin": "true"})
            ET.SubElement(conf, f"{{{NS_B2}}}nick").text = "ally"
            await phone.plugin["xep_0060"].publish(
                None, NS_B2, id=f"garden@muc.{DOMAIN}", payload=conf,
                options=publish_options(persist_items="true", max_items="max",
                                        send_last_published_item="never",
                                        access_model="whitelist"),
                timeout=STEP)
            await asyncio.wait_for(events.get(), STEP)
            r = await legacy.get_bookmarks(method="xep_0049", timeout=STEP)
            rooms = {str(c["jid"]): c for c in r["private"]["bookmarks"]["conferences"]}
            assert set(rooms) == {f"tea@muc.{DOMAIN}", f"book@muc.{DOMAIN}",
                                  f"garden@muc.{DOMAIN}"}
            assert rooms[f"garden@muc.{DOMAIN}"]["nick"] == "ally"
            assert rooms[f"garden@muc.{DOMAIN}"]["autojoin"] is True
            assert [u["url"] for u in r["private"]["bookmarks"]["urls"]] == \
                ["https://example.org/recipes"]

            # The laptop drops the book club: the phone is told it was retracted.
            marks = legacy.stanza.Bookmarks()
            for room, c in rooms.items():
                if room != f"book@muc.{DOMAIN}":
                    marks.add_conference(room, c["nick"], name=c["name"],
                                         autojoin=c["autojoin"])
            await legacy.set_bookmarks(marks, method="xep_0049", timeout=STEP)
            kind, msg = await asyncio.wait_for(events.get(), STEP)
            assert kind == "retract"
            assert msg["pubsub_event"]["items"]["retract"]["id"] == f"book@muc.{DOMAIN}"
            got = conferences(await phone.plugin["xep_0060"].get_items(None, NS_B2,
                                                                       timeout=STEP))
            assert set(got) == {f"tea@muc.{DOMAIN}", f"garden@muc.{DOMAIN}"}
    run(scenario())


def private_iq(client, ty: str, child: ET.Element, to: str | None = None):
    iq = client.make_iq_set() if ty == "set" else client.make_iq_get()
    if to:
        iq["to"] = to
    q = ET.Element(f"{{{NS_PRIVATE}}}query")
    q.append(child)
    iq.xml.append(q)
    return iq.send(timeout=STEP)


def test_private_xml_storage(kith):
    """XEP-0049: an app keeps its settings on the server, for itself only."""
    async def scenario():
        prefs = ET.Element("{urn:example:prefs}prefs")
        ET.SubElement(prefs, "{urn:example:prefs}theme").text = "dark"
        async with online(kith, "alice", "phone") as alice:
            await private_iq(alice, "set", prefs)
        async with online(kith, "alice", "laptop") as alice, \
                online(kith, "bob", "phone") as bob:
            r = await private_iq(alice, "get", ET.Element("{urn:example:prefs}prefs"))
            theme = r.xml.find(f"{{{NS_PRIVATE}}}query/{{urn:example:prefs}}prefs/"
                               "{urn:example:prefs}theme")
            assert theme is not None and theme.text == "dark"
            # Nothing stored: the empty element comes back.
            r = await private_iq(alice, "get", ET.Element("{urn:example:other}other"))
            other = r.xml.find(f"{{{NS_PRIVATE}}}query/{{urn:example:other}}other")
            assert other is not None and len(other) == 0
            # Someone else's private data: forbidden.
            with pytest.raises(IqError) as e:
                await private_iq(bob, "get", ET.Element("{urn:example:prefs}prefs"), to=ALICE)
            assert e.value.iq["error"]["condition"] == "forbidden"
            # jabber: namespaces are reserved.
            with pytest.raises(IqError) as e:
                await private_iq(alice, "set", ET.Element("{jabber:iq:roster}query"))
            assert e.value.iq["error"]["condition"] == "not-acceptable"
    run(scenario())


def test_deleting_an_account_deletes_its_profile_data(kith):
    """`kith user del` takes the account's PEP nodes, items and private data with it."""
    async def scenario():
        prefs = ET.Element("{urn:example:prefs}prefs")
        ET.SubElement(prefs, "{urn:example:prefs}theme").text = "dark"
        async with online(kith, "alice", "phone") as alice:
            alice.register_plugin("xep_0172")
            await alice.plugin["xep_0172"].publish_nick("Ally", timeout=STEP)
            await private_iq(alice, "set", prefs)
        kith.cli("user", "del", ALICE)
        kith.add_user("alice")
        async with online(kith, "alice", "phone") as alice:
            alice.register_plugin("xep_0060")
            with pytest.raises(IqError) as e:
                await alice.plugin["xep_0060"].get_items(None, "http://jabber.org/protocol/nick",
                                                         timeout=STEP)
            assert stanza_error(e.value)[0] == "item-not-found"
            r = await private_iq(alice, "get", ET.Element("{urn:example:prefs}prefs"))
            got = r.xml.find(f"{{{NS_PRIVATE}}}query/{{urn:example:prefs}}prefs")
            assert got is not None and len(got) == 0
    run(scenario())
