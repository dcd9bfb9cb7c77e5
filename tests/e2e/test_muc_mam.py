"""Group chat archives with slixmpp (xep_0045, xep_0313, xep_0359, xep_0425): every occupant
sees the same stanza id, the room's archive pages like an account's own, a member who was
not there catches up, outsiders are refused, history on entering survives a restart with
its original times, and moderators and authors can take messages back (tombstones in the
archive and in the history)."""

import asyncio
import signal
import xml.etree.ElementTree as ET

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback, Collector
from slixmpp.xmlstream.matcher import MatchXPath

from conftest import DOMAIN, STEP, online, run
from test_muc import MUC, create, enter, muc, say, set_aff, subject

NS_MAM = "urn:xmpp:mam:2"
NS_SID = "urn:xmpp:sid:0"
NS_DELAY = "urn:xmpp:delay"
NS_RETRACT = "urn:xmpp:message-retract:1"
NS_MODERATE = "urn:xmpp:message-moderate:1"
NS_OWNER = "http://jabber.org/protocol/muc#owner"


def plugins(c):
    muc(c)
    for p in ("xep_0059", "xep_0297", "xep_0313", "xep_0359", "xep_0421", "xep_0424",
              "xep_0425"):
        if p not in c.plugin:
            c.register_plugin(p)
    if not hasattr(c, "every_message"):
        # slixmpp's "message" event skips messages without a body (moderation notices,
        # retractions, errors about them): collect every message here.
        c.every_message = asyncio.Queue()
        c.register_handler(Callback("every message", MatchXPath("{jabber:client}message"),
                                    c.every_message.put_nowait))
    return c


async def next_any(c, match):
    """The next message of any kind that `match`es (bounded by STEP)."""
    deadline = asyncio.get_running_loop().time() + STEP
    while True:
        left = deadline - asyncio.get_running_loop().time()
        m = await asyncio.wait_for(c.every_message.get(), max(left, 0.01))
        if match(m):
            return m


async def room_message(c, room: str, match=lambda m: True):
    """The next groupchat message from the room (any content) that `match`es."""
    return await next_any(c, lambda m: m["type"] == "groupchat" and m["from"].bare == room
                          and match(m))


async def said(c, room: str, body: str):
    return await room_message(c, room, lambda m: m["body"] == body)


def sid(m, room: str) -> str:
    ids = [e.get("id") for e in m.xml.findall(f"{{{NS_SID}}}stanza-id") if e.get("by") == room]
    assert len(ids) == 1, f"expected one stanza id by {room}: {m}"
    return ids[0]


async def query(c, room: str, *, max=None, after=None, before=None, with_jid=None, ids=None):
    """One MAM query of the room's archive: (results, fin)."""
    plugins(c)
    iq = c.make_iq_set(ito=room)
    q = iq["mam"]
    q["queryid"] = iq["id"]
    if with_jid is not None:
        q["with"] = JID(with_jid)
    if ids is not None:
        q["ids"] = ids
    if max is not None:
        q["rsm"]["max"] = str(max)
    if after is not None:
        q["rsm"]["after"] = after
    if before is not None:
        q["rsm"]["before"] = before if before else True
    collector = Collector(f"mam-{iq['id']}",
                          MatchXPath(f"{{jabber:client}}message/{{{NS_MAM}}}result"))
    c.register_handler(collector)
    try:
        res = await iq.send(timeout=STEP)
    finally:
        got = collector.stop()
    for m in got:
        assert m["from"] == JID(room), f"results come from the room: {m}"
    results = [m["mam_result"] for m in got if m["mam_result"]["queryid"] == iq["id"]]
    return results, res["mam_fin"]


def inner(result):
    return result["forwarded"]["stanza"]


def bodies(results) -> list[str]:
    return [inner(r)["body"] for r in results]


async def refused(coro) -> str:
    with pytest.raises(IqError) as e:
        await coro
    return e.value.iq["error"]["condition"]


async def household_room(a, b, name: str, fields=None) -> str:
    """Alice's members-only room with bob as a member, both inside."""
    plugins(a), plugins(b)
    room = await create(a, name, "mum", fields)
    await set_aff(a, room, f"bob@{DOMAIN}", "member")
    await enter(b, room, "bob")
    await subject(b, room)
    return room


def test_same_stanza_id_for_everyone_paging_and_a_late_member(kith):
    async def scenario():
        async with online(kith, "alice") as a, online(kith, "bob") as b, \
                online(kith, "carol") as c:
            plugins(c)
            room = await household_room(a, b, "family")
            info = await a.plugin["xep_0030"].get_info(jid=room, timeout=STEP)
            feats = set(info["disco_info"]["features"])
            assert {NS_MAM, NS_SID, NS_MODERATE, NS_RETRACT} <= feats, feats
            texts = [f"m{i:02}" for i in range(23)]
            ids = []
            for i, t in enumerate(texts):
                await say(a if i % 2 == 0 else b, room, t)
                seen_a, seen_b = await said(a, room, t), await said(b, room, t)
                assert sid(seen_a, room) == sid(seen_b, room), "one id for every occupant"
                ids.append(sid(seen_a, room))
            assert len(set(ids)) == len(ids)

            # Carol is not a member: the archive is closed to her.
            assert await refused(query(c, room)) == "forbidden"
            # Made a member, she catches up without entering, 10 at a time.
            await set_aff(a, room, f"carol@{DOMAIN}", "member")
            seen, after = [], None
            for expected_complete in (False, False, True):
                results, fin = await query(c, room, max=10, after=after)
                seen += results
                assert fin["rsm"]["count"] == "23"
                assert bool(fin["complete"]) == expected_complete, fin
                after = fin["rsm"]["last"]
            assert bodies(seen) == texts
            assert [r["id"] for r in seen] == ids, "archive ids are the stanza ids"
            first = inner(seen[0])
            assert first["from"] == JID(f"{room}/mum") and first["type"] == "groupchat"
            assert seen[0]["forwarded"]["delay"]["stamp"] is not None
            # Non-anonymous room: members see who wrote what.
            x = first.xml.find("{http://jabber.org/protocol/muc#user}x")
            assert x is not None and x.find(
                "{http://jabber.org/protocol/muc#user}item").get("jid") == f"alice@{DOMAIN}"
            # The last page, backwards; `with` one nick; `ids`.
            results, fin = await query(c, room, max=5, before="")
            assert bodies(results) == texts[-5:]
            results, _ = await query(c, room, with_jid=f"{room}/bob")
            assert bodies(results) == texts[1::2]
            results, _ = await query(c, room, ids=[ids[3], ids[7]])
            assert bodies(results) == [texts[3], texts[7]]
            # slixmpp's own iteration over the room archive.
            got = [m["mam_result"]["forwarded"]["stanza"]["body"] async for m in
                   c.plugin["xep_0313"].iterate(jid=JID(room), rsm={"max": 7})]
            assert got == texts
            # The form and the metadata answer too.
            form = await c.plugin["xep_0313"].get_fields(jid=JID(room), timeout=STEP)
            assert "with" in form.get_fields()
            meta = await c.plugin["xep_0313"].get_archive_metadata(jid=JID(room),
                                                                   timeout=STEP)
            assert meta["mam_metadata"]["start"]["id"] == ids[0]
            assert meta["mam_metadata"]["end"]["id"] == ids[-1]
            # Banned from an open room: refused; anyone else may read.
            await muc(a).set_room_config(JID(room), await open_form(a, room))
            await set_aff(a, room, f"carol@{DOMAIN}", "outcast")
            assert await refused(query(c, room)) == "forbidden"
            await set_aff(a, room, f"carol@{DOMAIN}", "none")
            results, _ = await query(c, room, max=1)
            assert len(results) == 1
    run(scenario())


async def open_form(a, room):
    form = await muc(a).get_room_config(JID(room))
    form.set_values({**form.get_values(), "muc#roomconfig_membersonly": False})
    form["type"] = "submit"
    return form


def test_history_on_join_survives_a_restart_with_archived_times(kith):
    async def scenario():
        async with online(kith, "alice") as a, online(kith, "bob") as b:
            room = await household_room(a, b, "kitchen")
            sent = []
            for t in ("milk", "eggs", "bread"):
                await say(a, room, t)
                sent.append(sid(await said(b, room, t), room))
            results, _ = await query(b, room)
            stamps = {r["id"]: r["forwarded"]["delay"].xml.get("stamp") for r in results}
        kith.stop()
        kith.start()
        async with online(kith, "alice") as a, online(kith, "bob") as b:
            plugins(b)
            await enter(b, room, "bob", history={"maxstanzas": "2"})
            h = [await room_message(b, room), await room_message(b, room)]
            assert [m["body"] for m in h] == ["eggs", "bread"]
            for m in h:
                i = sid(m, room)
                assert i in sent[1:], "history keeps the stanza ids"
                d = m.xml.find(f"{{{NS_DELAY}}}delay")
                assert d is not None and d.get("stamp") == stamps[i], "archived times"
                assert m.xml.find("{http://jabber.org/protocol/muc#user}x") is None
            await subject(b, room)
            # And the archive goes on after the restart.
            await enter(a, room, "mum")
            await say(a, room, "jam")
            await said(b, room, "jam")
            results, _ = await query(b, room)
            assert bodies(results) == ["milk", "eggs", "bread", "jam"]
    run(scenario())


def retraction(c, room: str, target: str):
    m = c.make_message(mto=room, mtype="groupchat")
    m.xml.append(ET.Element(f"{{{NS_RETRACT}}}retract", {"id": target}))
    return m


def test_moderation_and_retraction(kith):
    async def scenario():
        async with online(kith, "alice") as a, online(kith, "bob") as b, \
                online(kith, "carol") as c:
            plugins(c)
            room = await household_room(a, b, "club")
            await set_aff(a, room, f"carol@{DOMAIN}", "member")
            await enter(c, room, "carol")
            await subject(c, room)
            await say(b, room, "buy cheap pills")
            spam = sid(await said(c, room, "buy cheap pills"), room)
            await say(c, room, "oops, wrong room")
            mine = sid(await said(b, room, "oops, wrong room"), room)

            # Carol is a participant, not a moderator; unknown ids are not found.
            assert await refused(c.plugin["xep_0425"].moderate(
                JID(room), spam, "no", timeout=STEP)) == "forbidden"
            assert await refused(a.plugin["xep_0425"].moderate(
                JID(room), "fffff", "x", timeout=STEP)) == "item-not-found"

            # Alice moderates bob's message: everyone is told, by whom and why.
            await a.plugin["xep_0425"].moderate(JID(room), spam, "spam", timeout=STEP)
            for who in (a, b, c):
                m = await room_message(who, room, lambda m: m.xml.find(
                    f"{{{NS_RETRACT}}}retract") is not None)
                assert m["from"] == JID(room), "moderation comes from the room itself"
                r = m.xml.find(f"{{{NS_RETRACT}}}retract")
                assert r.get("id") == spam
                assert r.find(f"{{{NS_MODERATE}}}moderated").get("by") == f"{room}/mum"
                assert r.find(f"{{{NS_RETRACT}}}reason").text == "spam"

            # Bob may not retract carol's message: refused, nothing changes.
            retraction(b, room, mine).send()
            e = await next_any(b, lambda m: m["type"] == "error")
            assert e["error"]["condition"] == "forbidden"
            # Carol retracts her own: broadcast like a message, from her.
            retraction(c, room, mine).send()
            m = await room_message(b, room, lambda m: m.xml.find(
                f"{{{NS_RETRACT}}}retract") is not None)
            assert m["from"] == JID(f"{room}/carol")
            assert m.xml.find(f"{{{NS_RETRACT}}}retract").get("id") == mine

            # The archive keeps tombstones: no body, who retracted, when.
            results, _ = await query(a, room, ids=[spam, mine])
            tomb_spam, tomb_mine = (inner(r) for r in results)
            for t in (tomb_spam, tomb_mine):
                assert not t["body"], f"the body is gone: {t}"
                assert t.xml.find(f"{{{NS_RETRACT}}}retracted").get("stamp")
            moderated = tomb_spam.xml.find(f"{{{NS_RETRACT}}}retracted/{{{NS_MODERATE}}}moderated")
            assert moderated.get("by") == f"{room}/mum"
            assert tomb_mine["from"] == JID(f"{room}/carol")
            # The announcements are archived too, for clients catching up.
            results, _ = await query(a, room)
            assert len(results) == 4

            # History on entering shows the tombstones, not the bodies.
            b.make_presence(pto=f"{room}/bob", ptype="unavailable").send()
            await b.next_presence(lambda p: p["type"] == "unavailable")
            await enter(b, room, "bob")
            history = []
            while len(history) < 4:
                history.append(await room_message(b, room))
            assert not any(m["body"] for m in history), [str(m) for m in history]
            assert [sid(m, room) for m in history[:1]] == [spam]
    run(scenario())


def test_archiving_off_and_destroying_a_room(kith):
    async def scenario():
        async with online(kith, "alice") as a, online(kith, "bob") as b:
            plugins(a), plugins(b)
            quiet = await create(a, "quiet", "mum", {"muc#roomconfig_enablearchiving": False})
            info = await a.plugin["xep_0030"].get_info(jid=quiet, timeout=STEP)
            feats = set(info["disco_info"]["features"])
            assert NS_SID in feats and NS_MAM not in feats
            await say(a, quiet, "not kept")
            m = await said(a, quiet, "not kept")
            assert sid(m, quiet), "still a stanza id, for replies and moderation"
            assert await refused(query(a, quiet)) == "service-unavailable"

            room = await household_room(a, b, "attic")
            await say(a, room, "the old box")
            await said(b, room, "the old box")
            assert await refused(query(b, f"nowhere@{MUC}")) == "item-not-found"
            iq = a.make_iq_set(ito=room)
            q = iq.xml.makeelement(f"{{{NS_OWNER}}}query", {})
            q.append(q.makeelement(f"{{{NS_OWNER}}}destroy", {}))
            iq.xml.append(q)
            await iq.send(timeout=STEP)
            # A new room under the same name starts with an empty archive.
            room = await create(a, "attic", "mum")
            results, fin = await query(a, room)
            assert results == [] and fin["rsm"]["count"] == "0"
            # A temporary room still open when the server dies...
            shed = await create(a, "shed", "mum", {"muc#roomconfig_persistentroom": False})
            await say(a, shed, "tools")
            await said(a, shed, "tools")
            results, _ = await query(a, shed)
            assert bodies(results) == ["tools"]
            kith.stop(signal.SIGKILL)  # with alice still inside
        kith.start()
        async with online(kith, "alice") as a:
            plugins(a)
            # ...leaves no archive to a new room of that name.
            shed = await create(a, "shed", "mum")
            results, fin = await query(a, shed)
            assert results == [] and fin["rsm"]["count"] == "0"
    run(scenario())
