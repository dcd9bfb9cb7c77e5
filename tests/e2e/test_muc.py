"""Group chats (XEP-0045) on groups.localhost with slixmpp's xep_0045: creating and
configuring rooms, entering with the status codes clients key on, talking, nick changes,
private messages, roles and affiliations, members-only and password rooms, destruction,
history on entering, and rooms surviving a restart."""

import asyncio

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError

from conftest import DOMAIN, STEP, online, run

MUC = f"groups.{DOMAIN}"
NS_USER = "http://jabber.org/protocol/muc#user"
NS_OWNER = "http://jabber.org/protocol/muc#owner"
NS_ADMIN = "http://jabber.org/protocol/muc#admin"


def codes(p) -> set[int]:
    x = p.xml.find(f"{{{NS_USER}}}x")
    if x is None:
        return set()
    return {int(s.get("code")) for s in x.findall(f"{{{NS_USER}}}status")}


def item(p):
    x = p.xml.find(f"{{{NS_USER}}}x")
    return None if x is None else x.find(f"{{{NS_USER}}}item")


def muc(c):
    for p in ("xep_0045", "xep_0004"):
        if p not in c.plugin:
            c.register_plugin(p)
    if not hasattr(c, "subjects"):
        # Subject-only messages have no body: slixmpp reports them as groupchat_subject.
        c.subjects = asyncio.Queue()
        c.add_event_handler("groupchat_subject", c.subjects.put_nowait)
        c.notices = asyncio.Queue()
        c.add_event_handler("groupchat_config_status", c.notices.put_nowait)
    return c.plugin["xep_0045"]


async def enter(c, room: str, nick: str, *, password=None, history=None, expect_error=None):
    """Send the entrance presence; return the self-presence (110) or the error presence."""
    muc(c)
    p = c.make_presence(pto=f"{room}/{nick}")
    x = p.xml.makeelement("{http://jabber.org/protocol/muc}x", {})
    if password is not None:
        pw = x.makeelement("{http://jabber.org/protocol/muc}password", {})
        pw.text = password
        x.append(pw)
    if history is not None:
        x.append(x.makeelement("{http://jabber.org/protocol/muc}history", history))
    p.xml.append(x)
    p.send()
    got = await c.next_presence(
        lambda q: q["from"].bare == room and q["from"].resource == nick
        and (q["type"] == "error" or 110 in codes(q)))
    if expect_error:
        assert got["type"] == "error", f"expected {expect_error}, got {got}"
        assert got["error"]["condition"] == expect_error, got
    else:
        assert got["type"] != "error", f"could not enter {room} as {nick}: {got}"
    return got


async def subject(c, room: str):
    """Wait for the subject message that ends an entrance."""
    muc(c)
    while True:
        m = await asyncio.wait_for(c.subjects.get(), STEP)
        if m["from"].bare == room:
            return m


async def create(c, name: str, nick: str, fields=None) -> str:
    """Create a reserved room and submit its form (defaults plus `fields`)."""
    room = f"{name}@{MUC}"
    p = await enter(c, room, nick)
    assert 201 in codes(p), codes(p)
    await subject(c, room)
    form = await muc(c).get_room_config(JID(room))
    for var, value in (fields or {}).items():
        form.set_values({**form.get_values(), var: value})
    form["type"] = "submit"
    await muc(c).set_room_config(JID(room), form)
    return room


async def set_aff(c, room: str, jid: str, aff: str):
    iq = c.make_iq_set(ito=room)
    q = iq.xml.makeelement(f"{{{NS_ADMIN}}}query", {})
    q.append(q.makeelement(f"{{{NS_ADMIN}}}item", {"jid": jid, "affiliation": aff}))
    iq.xml.append(q)
    return await iq.send(timeout=STEP)


async def say(c, room: str, body: str):
    c.send_message(mto=room, mbody=body, mtype="groupchat")


async def groupchat(c, room: str):
    while True:
        m = await c.next_message()
        if m["type"] == "groupchat" and m["from"].bare == room:
            return m


def test_create_configure_and_talk(kith):
    async def scenario():
        async with online(kith, "alice") as a, online(kith, "bob") as b:
            room = await create(a, "family", "mum", {"muc#roomconfig_roomname": "Family"})
            # Members-only by default: bob needs membership first.
            await enter(b, room, "bob", expect_error="registration-required")
            await set_aff(a, room, f"bob@{DOMAIN}", "member")
            p = await enter(b, room, "bob")
            assert {110, 100, 170} <= codes(p), codes(p)
            assert item(p).get("affiliation") == "member"
            assert item(p).get("role") == "participant"
            assert item(p).get("jid") == str(b.boundjid), "non-anonymous: real JIDs shown"
            assert p.xml.find("{urn:xmpp:occupant-id:0}occupant-id") is not None
            seen = await a.next_presence(lambda q: q["from"].resource == "bob")
            assert item(seen).get("jid") == str(b.boundjid)
            await subject(b, room)
            await say(a, room, "dinner at 7")
            m = await groupchat(b, room)
            assert m["body"] == "dinner at 7" and m["from"].resource == "mum"
            echo = await groupchat(a, room)
            assert echo["body"] == "dinner at 7"
    run(scenario())


def test_nick_change_conflict_and_private_messages(kith):
    async def scenario():
        async with online(kith, "alice") as a, online(kith, "bob") as b:
            room = await create(a, "kids", "mum", {"muc#roomconfig_membersonly": False})
            await enter(b, room, "bob")
            await subject(b, room)
            # A nick in use by someone else is refused.
            pb = b.make_presence(pto=f"{room}/mum")
            pb.send()
            err = await b.next_presence(lambda q: q["type"] == "error")
            assert err["error"]["condition"] == "conflict"
            # Changing nick: 303 with the new nick, then the new presence.
            b.make_presence(pto=f"{room}/robert").send()
            gone = await a.next_presence(
                lambda q: q["from"].resource == "bob" and q["type"] == "unavailable")
            assert gone["type"] == "unavailable" and 303 in codes(gone)
            assert item(gone).get("nick") == "robert"
            back = await a.next_presence(lambda q: q["from"].resource == "robert")
            assert back["type"] != "unavailable"
            # A private message through the room.
            b.send_message(mto=f"{room}/mum", mbody="psst", mtype="chat")
            m = await a.next_message()
            assert m["from"] == JID(f"{room}/robert") and m["body"] == "psst"
            # To a nick nobody holds.
            b.send_message(mto=f"{room}/nobody", mbody="hello?", mtype="chat")
            e = await b.next_message(body_only=False)
            while e["type"] != "error":
                e = await b.next_message(body_only=False)
            assert e["error"]["condition"] == "item-not-found"
    run(scenario())


def test_kick_ban_and_the_last_owner(kith):
    async def scenario():
        async with online(kith, "alice") as a, online(kith, "bob") as b, online(kith, "carol") as c:
            room = await create(a, "club", "mum")
            for u in ("bob", "carol"):
                await set_aff(a, room, f"{u}@{DOMAIN}", "member")
            await enter(b, room, "bob")
            await enter(c, room, "carol")
            # Carol (a participant) may not kick.
            iq = c.make_iq_set(ito=room)
            q = iq.xml.makeelement(f"{{{NS_ADMIN}}}query", {})
            q.append(q.makeelement(f"{{{NS_ADMIN}}}item", {"nick": "bob", "role": "none"}))
            iq.xml.append(q)
            with pytest.raises(IqError) as e:
                await iq.send(timeout=STEP)
            assert e.value.iq["error"]["condition"] == "forbidden"
            # Alice kicks bob: 307 to everyone, bob may come back.
            await muc(a).set_role(JID(room), "bob", "none", reason="time out")
            kicked = await b.next_presence(lambda q: q["type"] == "unavailable" and 307 in codes(q))
            assert 110 in codes(kicked)
            seen = await c.next_presence(lambda q: q["type"] == "unavailable" and q["from"].resource == "bob")
            assert 307 in codes(seen)
            await enter(b, room, "bob")
            # Alice bans bob: 301, and he cannot come back.
            await set_aff(a, room, f"bob@{DOMAIN}", "outcast")
            banned = await b.next_presence(lambda q: q["type"] == "unavailable" and 301 in codes(q))
            assert 110 in codes(banned)
            await enter(b, room, "bob", expect_error="forbidden")
            # The outcast list is for admins; carol is refused it.
            with pytest.raises(IqError) as e:
                await muc(c).get_affiliation_list(JID(room), "outcast")
            assert e.value.iq["error"]["condition"] == "forbidden"
            assert f"bob@{DOMAIN}" in await muc(a).get_affiliation_list(JID(room), "outcast")
            # The last owner cannot step down.
            with pytest.raises(IqError) as e:
                await set_aff(a, room, f"alice@{DOMAIN}", "member")
            assert e.value.iq["error"]["condition"] == "conflict"
    run(scenario())


def test_member_list_for_omemo(kith):
    async def scenario():
        async with online(kith, "alice") as a, online(kith, "bob") as b, online(kith, "carol") as c:
            room = await create(a, "secret", "mum")
            await set_aff(a, room, f"bob@{DOMAIN}", "member")
            await enter(b, room, "bob")
            members = await muc(b).get_affiliation_list(JID(room), "member")
            owners = await muc(b).get_affiliation_list(JID(room), "owner")
            assert members == [f"bob@{DOMAIN}"] and owners == [f"alice@{DOMAIN}"]
            with pytest.raises(IqError) as e:
                await muc(c).get_affiliation_list(JID(room), "member")
            assert e.value.iq["error"]["condition"] == "forbidden"
    run(scenario())


def test_password_history_destroy_and_restart(kith):
    async def scenario():
        async with online(kith, "alice") as a, online(kith, "bob") as b:
            room = await create(a, "attic", "mum", {
                "muc#roomconfig_membersonly": False,
                "muc#roomconfig_passwordprotectedroom": True,
                "muc#roomconfig_roomsecret": "hunter2",
            })
            for i in range(5):
                await say(a, room, f"m{i}")
            for i in range(5):
                assert (await groupchat(a, room))["body"] == f"m{i}"
            await enter(b, room, "bob", expect_error="not-authorized")
            await enter(b, room, "bob", password="wrong", expect_error="not-authorized")
            await enter(b, room, "bob", password="hunter2", history={"maxstanzas": "2"})
            h1, h2 = await groupchat(b, room), await groupchat(b, room)
            assert [h1["body"], h2["body"]] == ["m3", "m4"]
            assert h1.xml.find("{urn:xmpp:delay}delay") is not None
            await subject(b, room)
        kith.stop()
        kith.start()
        async with online(kith, "alice") as a, online(kith, "bob") as b:
            info = await a.plugin["xep_0030"].get_info(jid=room, timeout=STEP)
            feats = set(info["disco_info"]["features"])
            assert {"muc_persistent", "muc_passwordprotected", "muc_nonanonymous"} <= feats
            await enter(a, room, "mum")
            iq = a.make_iq_set(ito=room)
            q = iq.xml.makeelement(f"{{{NS_OWNER}}}query", {})
            d = q.makeelement(f"{{{NS_OWNER}}}destroy", {"jid": f"elsewhere@{MUC}"})
            q.append(d)
            iq.xml.append(q)
            await iq.send(timeout=STEP)
            p = await a.next_presence(lambda q: q["type"] == "unavailable")
            x = p.xml.find(f"{{{NS_USER}}}x")
            assert x.find(f"{{{NS_USER}}}destroy").get("jid") == f"elsewhere@{MUC}"
            with pytest.raises(IqError) as e:
                await a.plugin["xep_0030"].get_info(jid=room, timeout=STEP)
            assert e.value.iq["error"]["condition"] == "item-not-found"
    run(scenario())


def test_locked_rooms_config_notices_and_members_only_switch(kith):
    async def scenario():
        async with online(kith, "alice") as a, online(kith, "bob") as b, online(kith, "carol") as c:
            room = f"porch@{MUC}"
            p = await enter(a, room, "mum")
            assert 201 in codes(p)
            # Until the owner submits the form, nobody else gets in.
            await enter(b, room, "bob", expect_error="item-not-found")
            form = await muc(a).get_room_config(JID(room))
            values = form.get_values()
            assert values["muc#roomconfig_membersonly"] is True
            assert values["muc#roomconfig_whois"] == "anyone"
            assert values["muc#roomconfig_persistentroom"] is True
            form.set_values({**form.get_values(), "muc#roomconfig_membersonly": False})
            form["type"] = "submit"
            await muc(a).set_room_config(JID(room), form)
            await set_aff(a, room, f"carol@{DOMAIN}", "member")
            await enter(b, room, "bob")
            await enter(c, room, "carol")
            # Making the room members-only: a 104 notice, and bob (no affiliation) is removed with 322.
            form = await muc(a).get_room_config(JID(room))
            form.set_values({**form.get_values(), "muc#roomconfig_membersonly": True})
            form["type"] = "submit"
            await muc(a).set_room_config(JID(room), form)
            notice = await asyncio.wait_for(c.notices.get(), STEP)
            assert notice["from"] == JID(room) and 104 in codes(notice)
            out = await b.next_presence(lambda q: q["type"] == "unavailable" and 322 in codes(q))
            assert 110 in codes(out)
            await c.next_presence(lambda q: q["from"].resource == "bob" and 322 in codes(q))
            # Bad values are refused and change nothing.
            form = await muc(a).get_room_config(JID(room))
            form.set_values({**form.get_values(), "muc#roomconfig_whois": "everybody"})
            form["type"] = "submit"
            with pytest.raises(IqError) as e:
                await muc(a).set_room_config(JID(room), form)
            assert e.value.iq["error"]["condition"] == "not-acceptable"
            # A member may not read the configuration.
            with pytest.raises(IqError) as e:
                await muc(c).get_room_config(JID(room))
            assert e.value.iq["error"]["condition"] == "forbidden"
    run(scenario())


def test_leaving_and_temporary_rooms(kith):
    async def scenario():
        async with online(kith, "alice") as a, online(kith, "bob") as b:
            room = await create(a, "tmp", "mum", {"muc#roomconfig_persistentroom": False,
                                                  "muc#roomconfig_membersonly": False})
            await enter(b, room, "bob")
            # A broadcast unavailable presence takes bob out of the room.
            b.send_presence(ptype="unavailable", pstatus="bye")
            left = await a.next_presence(
                lambda q: q["from"].resource == "bob" and q["type"] == "unavailable")
            assert left["status"] == "bye"
            # Disconnecting takes alice out; the empty temporary room goes away.
            await a.close()
            with pytest.raises(IqError) as e:
                await b.plugin["xep_0030"].get_info(jid=room, timeout=STEP)
            assert e.value.iq["error"]["condition"] == "item-not-found"
    run(scenario())


def test_bounds(kith_factory):
    k = kith_factory()
    for u in ("alice", "bob", "carol"):
        k.add_user(u)
    k.config.write_text(k.config.read_text()
                        + "\n[muc]\nmax_occupants = 2\nmax_rooms_per_user = 1\njoin_rate = 4\n")
    k.start()

    async def scenario():
        async with online(k, "alice") as a, online(k, "bob") as b, online(k, "carol") as c:
            room = await create(a, "small", "mum", {"muc#roomconfig_membersonly": False})
            # One room per user.
            p = a.make_presence(pto=f"second@{MUC}/mum")
            p.xml.append(p.xml.makeelement("{http://jabber.org/protocol/muc}x", {}))
            p.send()
            err = await a.next_presence(lambda q: q["type"] == "error")
            assert err["error"]["condition"] == "not-allowed"
            # Two occupants at most (the owner could still enter).
            await enter(b, room, "bob")
            await enter(c, room, "carol", expect_error="service-unavailable")
            # Joins per minute: carol already used one; three more pass the limit of four.
            for i in range(3):
                await enter(c, f"small@{MUC}", "carol", expect_error="service-unavailable")
            await enter(c, room, "carol", expect_error="resource-constraint")
            assert k.alive()
    run(scenario())


def test_what_only_the_room_may_say_is_stripped(kith):
    """A client cannot forge the room's stanza id, occupant id or muc#user item."""
    async def scenario():
        async with online(kith, "alice") as a, online(kith, "bob") as b:
            room = await create(a, "forge", "mum", {"muc#roomconfig_membersonly": False})
            await enter(b, room, "bob")
            m = b.make_message(mto=room, mbody="trust me", mtype="groupchat")
            x = m.xml.makeelement(f"{{{NS_USER}}}x", {})
            x.append(x.makeelement(f"{{{NS_USER}}}item", {"jid": f"alice@{DOMAIN}/evil"}))
            m.xml.append(x)
            m.xml.append(m.xml.makeelement("{urn:xmpp:occupant-id:0}occupant-id",
                                           {"id": "forged"}))
            m.xml.append(m.xml.makeelement("{urn:xmpp:sid:0}stanza-id",
                                           {"by": room, "id": "forged"}))
            m.send()
            got = await groupchat(a, room)
            assert got["body"] == "trust me"
            assert got.xml.find(f"{{{NS_USER}}}x") is None
            ids = got.xml.findall("{urn:xmpp:occupant-id:0}occupant-id")
            assert [i.get("id") for i in ids] != ["forged"] and len(ids) == 1
            sids = [s.get("id") for s in got.xml.findall("{urn:xmpp:sid:0}stanza-id")
                    if s.get("by") == room]
            assert sids and "forged" not in sids
    run(scenario())
