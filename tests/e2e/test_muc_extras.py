"""The social side of group chats on groups.localhost: mediated invitations (XEP-0045
§7.8.2) and direct ones (XEP-0249, slixmpp's xep_0249), voice requests in moderated rooms
(§7.13, §8.6), nick registration (§7.10, §7.12), self-ping and IQs to occupants
(XEP-0410), and room pictures (vCard on the room, XEP-0486) — each with its refusals."""

import asyncio
import base64
import hashlib

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from conftest import DOMAIN, STEP, online, run
from test_muc import MUC, NS_USER, codes, create, enter, groupchat, item, muc, say, set_aff, subject

NS_DATA = "jabber:x:data"
NS_CONFERENCE = "jabber:x:conference"
NS_REGISTER = "jabber:iq:register"
NS_REQUEST = "http://jabber.org/protocol/muc#request"
NS_VCARD = "vcard-temp"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"


def watch(c):
    """Queue every message `c` gets from now on (slixmpp's `message` event skips those
    without a body: errors, forms, status notices)."""
    if not hasattr(c, "all_messages"):
        c.all_messages = asyncio.Queue()
        c.register_handler(Callback("all messages", MatchXPath("{jabber:client}message"),
                                    c.all_messages.put_nowait))
    return c


async def message(c, match, timeout: float = STEP):
    """The next message (with or without a body) that `match`es."""
    watch(c)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        m = await asyncio.wait_for(c.all_messages.get(), max(left, 0.01))
        if match(m):
            return m


def muc_x(m):
    return m.xml.find(f"{{{NS_USER}}}x")


async def error_message(c, room: str):
    m = await message(c, lambda m: m["type"] == "error" and m["from"].bare == room)
    return condition(m)


def condition(stanza) -> str:
    """The defined condition of an error stanza, read from the XML (slixmpp does not
    know every RFC 6120 condition)."""
    err = stanza.xml.find("{jabber:client}error")
    for child in err:
        if child.tag.startswith("{urn:ietf:params:xml:ns:xmpp-stanzas}") and \
                not child.tag.endswith("}text"):
            return child.tag.split("}")[1]
    return ""


def raw_message(c, to: str, x_children, ns=NS_USER):
    """A message to `to` with an <x xmlns=ns> holding `x_children` (tag, attrs, reason)."""
    m = c.make_message(mto=to)
    x = m.xml.makeelement(f"{{{ns}}}x", {})
    for tag, attrs, reason in x_children:
        child = x.makeelement(f"{{{ns}}}{tag}", attrs)
        if reason:
            r = child.makeelement(f"{{{ns}}}reason", {})
            r.text = reason
            child.append(r)
        x.append(child)
    m.xml.append(x)
    return m


def form_values(x) -> dict:
    out = {}
    for f in x.findall(f"{{{NS_DATA}}}field"):
        out[f.get("var")] = [v.text or "" for v in f.findall(f"{{{NS_DATA}}}value")]
    return out


async def iq_error(awaitable) -> str:
    with pytest.raises(IqError) as e:
        await awaitable
    return condition(e.value.iq)


def test_mediated_invitations_make_members_and_declines_reach_the_inviter(kith):
    async def scenario():
        async with online(kith, "alice") as a, online(kith, "bob") as b:
            watch(a), watch(b)
            room = await create(a, "family", "mum", {"muc#roomconfig_roomname": "Family"})
            # Members-only: bob cannot enter until alice invites him.
            await enter(b, room, "bob", expect_error="registration-required")
            muc(a).invite(room, f"bob@{DOMAIN}", reason="dinner plans")
            inv = await message(b, lambda m: muc_x(m) is not None and m["from"] == JID(room))
            invite = muc_x(inv).find(f"{{{NS_USER}}}invite")
            assert invite.get("from") == f"alice@{DOMAIN}"
            assert invite.findtext(f"{{{NS_USER}}}reason") == "dinner plans"
            conference = inv.xml.find(f"{{{NS_CONFERENCE}}}x")
            assert conference is not None and conference.get("jid") == room
            assert "invited you" in inv["body"]
            # The invitation made him a member: he enters, and the member list says so.
            p = await enter(b, room, "bob")
            assert item(p).get("affiliation") == "member"
            assert f"bob@{DOMAIN}" in await muc(a).get_affiliation_list(JID(room), "member")
            await subject(b, room)
        # Carol is offline: the invitation waits for her in offline storage.
        async with online(kith, "alice") as a:
            watch(a)
            await enter(a, room, "mum")
            muc(a).invite(room, f"carol@{DOMAIN}")
            await a.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
            async with online(kith, "carol", presence=False) as c:
                watch(c).send_presence()
                inv = await message(c, lambda m: muc_x(m) is not None)
                assert inv["from"] == JID(room)
                assert inv.xml.find("{urn:xmpp:delay}delay") is not None, "from offline storage"
                # She declines; alice hears it from the room.
                muc(c).decline(room, f"alice@{DOMAIN}", reason="busy tonight")
                d = await message(a, lambda m: muc_x(m) is not None
                                  and muc_x(m).find(f"{{{NS_USER}}}decline") is not None)
                decline = muc_x(d).find(f"{{{NS_USER}}}decline")
                assert d["from"] == JID(room)
                assert decline.get("from") == f"carol@{DOMAIN}"
                assert decline.findtext(f"{{{NS_USER}}}reason") == "busy tonight"
    run(scenario())


def test_invitations_that_are_refused(kith):
    async def scenario():
        async with online(kith, "alice") as a, online(kith, "bob") as b, \
                online(kith, "carol") as c:
            watch(a), watch(b), watch(c)
            room = await create(a, "study", "mum", {"muc#roomconfig_allowinvites": False})
            await set_aff(a, room, f"bob@{DOMAIN}", "member")
            await enter(b, room, "bob")
            await subject(b, room)
            # A member may not invite when the room does not allow it.
            muc(b).invite(room, f"carol@{DOMAIN}")
            assert await error_message(b, room) == "forbidden"
            # Nor may someone with no business in the room.
            muc(c).invite(room, f"carol@{DOMAIN}")
            assert await error_message(c, room) == "forbidden"
            # Eleven invitations in one message are too many; nothing is sent.
            many = [("invite", {"to": f"u{i}@{DOMAIN}"}, None) for i in range(11)]
            raw_message(a, room, many).send()
            assert await error_message(a, room) == "policy-violation"
            # A banned person is not invited.
            await set_aff(a, room, f"carol@{DOMAIN}", "outcast")
            muc(a).invite(room, f"carol@{DOMAIN}")
            assert await error_message(a, room) == "not-allowed"
            # A decline to someone the room does not know goes nowhere.
            muc(c).decline(room, "stranger@example.org")
            assert await error_message(c, room) == "item-not-found"
            # Neither invite nor decline.
            raw_message(a, room, [("item", {}, None)]).send()
            assert await error_message(a, room) == "bad-request"
            await c.expect_no_message(0.5)
    run(scenario())


def test_direct_invitation_passes_through_unchanged(kith):
    async def scenario():
        async with online(kith, "alice") as a:
            room = await create(a, "picnic", "mum")
            info = await a.plugin["xep_0030"].get_info(jid=room, timeout=STEP)
            assert NS_CONFERENCE in info["disco_info"]["features"]
            # Bob is offline; alice makes him a member and invites him directly.
            await set_aff(a, room, f"bob@{DOMAIN}", "member")
            a.register_plugin("xep_0249")
            a.plugin["xep_0249"].send_invitation(JID(f"bob@{DOMAIN}"), JID(room),
                                                 reason="sandwiches")
            await a.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
        async with online(kith, "bob", presence=False) as b:
            watch(b).send_presence()
            inv = await message(b, lambda m: m.xml.find(f"{{{NS_CONFERENCE}}}x") is not None)
            x = inv.xml.find(f"{{{NS_CONFERENCE}}}x")
            assert inv["from"].bare == f"alice@{DOMAIN}", "sent by alice, not by the room"
            assert x.get("jid") == room and x.get("reason") == "sandwiches"
            assert inv.xml.find("{urn:xmpp:delay}delay") is not None
            p = await enter(b, room, "bob")
            assert item(p).get("affiliation") == "member"
    run(scenario())


def test_voice_requests_in_a_moderated_room(kith):
    async def scenario():
        async with online(kith, "alice") as a, online(kith, "bob") as b, \
                online(kith, "carol") as c:
            watch(a), watch(b), watch(c)
            room = await create(a, "townhall", "mum", {
                "muc#roomconfig_membersonly": False,
                "muc#roomconfig_moderatedroom": True,
            })
            await set_aff(a, room, f"bob@{DOMAIN}", "member")
            await enter(b, room, "bob")
            p = await enter(c, room, "carol")
            assert item(p).get("role") == "visitor"
            await subject(c, room)
            # A participant already has voice.
            muc(b).request_voice(room, "participant")
            assert await error_message(b, room) == "not-acceptable"
            # Carol asks; alice (a moderator) gets the approval form.
            muc(c).request_voice(room, "participant")
            req = await message(a, lambda m: m.xml.find(f"{{{NS_DATA}}}x") is not None)
            assert req["from"] == JID(room)
            form = req.xml.find(f"{{{NS_DATA}}}x")
            values = form_values(form)
            assert values["FORM_TYPE"] == [NS_REQUEST]
            assert values["muc#roomnick"] == ["carol"]
            assert values["muc#jid"] == [str(c.boundjid)]
            assert values["muc#request_allow"] == ["false"]
            # Bob (not a moderator) does not get it; a second request waits.
            muc(c).request_voice(room, "participant")
            assert await error_message(c, room) == "resource-constraint"
            # Alice approves: carol becomes a participant, everyone sees it.
            answer = a.make_message(mto=room)
            x = answer.xml.makeelement(f"{{{NS_DATA}}}x", {"type": "submit"})
            for var, value in (("FORM_TYPE", NS_REQUEST), ("muc#role", "participant"),
                               ("muc#roomnick", "carol"), ("muc#request_allow", "true")):
                f = x.makeelement(f"{{{NS_DATA}}}field", {"var": var})
                v = f.makeelement(f"{{{NS_DATA}}}value", {})
                v.text = value
                f.append(v)
                x.append(f)
            answer.xml.append(x)
            answer.send()
            mine = await c.next_presence(lambda q: q["from"].resource == "carol"
                                         and 110 in codes(q))
            assert item(mine).get("role") == "participant"
            seen = await b.next_presence(lambda q: q["from"].resource == "carol"
                                         and item(q).get("role") == "participant")
            assert item(seen).find(f"{{{NS_USER}}}actor").get("nick") == "mum"
            await say(c, room, "thank you")
            m = await groupchat(b, room)
            assert m["body"] == "thank you"
            assert not [m for m in _drain(b) if m.xml.find(f"{{{NS_DATA}}}x") is not None]
    run(scenario())


def _drain(c):
    out = []
    while not c.all_messages.empty():
        out.append(c.all_messages.get_nowait())
    return out


def register_iq(c, room: str, nick=None, remove=False, get=False):
    iq = c.make_iq_get(ito=room) if get else c.make_iq_set(ito=room)
    q = iq.xml.makeelement(f"{{{NS_REGISTER}}}query", {})
    if remove:
        q.append(q.makeelement(f"{{{NS_REGISTER}}}remove", {}))
    elif nick is not None:
        x = q.makeelement(f"{{{NS_DATA}}}x", {"type": "submit"})
        for var, value in (("FORM_TYPE", "http://jabber.org/protocol/muc#register"),
                           ("muc#register_roomnick", nick)):
            f = x.makeelement(f"{{{NS_DATA}}}field", {"var": var})
            v = f.makeelement(f"{{{NS_DATA}}}value", {})
            v.text = value
            f.append(v)
            x.append(f)
        q.append(x)
    iq.xml.append(q)
    return iq.send(timeout=STEP)


async def reserved_nick(c, room: str):
    info = await c.plugin["xep_0030"].get_info(jid=room, node="x-roomuser-item", timeout=STEP)
    ids = list(info["disco_info"]["identities"])
    return ids[0][3] if ids else None


def test_nick_registration(kith):
    async def scenario():
        async with online(kith, "alice") as a, online(kith, "bob") as b, \
                online(kith, "carol") as c:
            watch(a), watch(b), watch(c)
            room = await create(a, "garden", "mum", {"muc#roomconfig_membersonly": False})
            info = await b.plugin["xep_0030"].get_info(jid=room, timeout=STEP)
            assert NS_REGISTER in info["disco_info"]["features"]
            # The form, then registering: bob becomes a member with a reserved nick.
            got = await register_iq(b, room, get=True)
            form = got.xml.find(f"{{{NS_REGISTER}}}query/{{{NS_DATA}}}x")
            assert "muc#register_roomnick" in form_values(form) or form.find(
                f"{{{NS_DATA}}}field[@var='muc#register_roomnick']") is not None
            assert await reserved_nick(b, room) is None
            await register_iq(b, room, nick="bobby")
            got = await register_iq(b, room, get=True)
            q = got.xml.find(f"{{{NS_REGISTER}}}query")
            assert q.find(f"{{{NS_REGISTER}}}registered") is not None
            assert q.findtext(f"{{{NS_REGISTER}}}username") == "bobby"
            assert await reserved_nick(b, room) == "bobby"
            members = await muc(a).get_affiliation_list(JID(room), "member")
            assert f"bob@{DOMAIN}" in members
            # The nick is bob's: carol can neither register it nor enter with it.
            assert await iq_error(register_iq(c, room, nick="bobby")) == "conflict"
            await enter(c, room, "bobby", expect_error="conflict")
            assert await iq_error(register_iq(c, room, nick="")) == "not-acceptable"
            await enter(b, room, "bobby")
            # Cancelling releases it (and, in an open room, the membership).
            await register_iq(b, room, remove=True)
            assert await reserved_nick(b, room) is None
            assert f"bob@{DOMAIN}" not in await muc(a).get_affiliation_list(JID(room), "member")
            # While bob is in the room as bobby, it is still his to use; once he leaves,
            # carol may have it.
            assert await iq_error(register_iq(c, room, nick="bobby")) == "conflict"
            b.make_presence(pto=f"{room}/bobby", ptype="unavailable").send()
            await b.next_presence(lambda q: q["type"] == "unavailable" and 110 in codes(q))
            await register_iq(c, room, nick="bobby")
            # In a members-only room only members register.
            closed = await create(a, "vault", "mum")
            assert await iq_error(register_iq(c, closed, get=True)) == "registration-required"
            assert await iq_error(register_iq(c, closed, nick="cc")) == "registration-required"
        # Registrations survive a restart.
        kith.stop()
        kith.start()
        async with online(kith, "carol") as c, online(kith, "bob") as b:
            assert await reserved_nick(c, room) == "bobby"
            await enter(b, room, "bobby", expect_error="conflict")
    run(scenario())


def test_self_ping_and_iqs_to_occupants(kith):
    async def scenario():
        async with online(kith, "alice") as a, online(kith, "bob") as b, \
                online(kith, "carol") as c:
            watch(a), watch(b), watch(c)
            room = await create(a, "porch", "mum", {"muc#roomconfig_membersonly": False})
            info = await a.plugin["xep_0030"].get_info(jid=room, timeout=STEP)
            assert ("http://jabber.org/protocol/muc#self-ping-optimization"
                    in info["disco_info"]["features"])
            await enter(b, room, "bob")
            ping = a.plugin["xep_0199"]
            # Self-ping: the room answers for a joined session.
            await ping.ping(f"{room}/mum", timeout=STEP)
            # Not in the room: not-acceptable, by the room.
            with pytest.raises(IqError) as e:
                await c.plugin["xep_0199"].ping(f"{room}/mum", timeout=STEP)
            assert e.value.iq["error"]["condition"] == "not-acceptable"
            assert e.value.iq.xml.find("{jabber:client}error").get("by") == room
            # Nobody by that nick.
            assert await iq_error(ping.ping(f"{room}/nobody", timeout=STEP)) == "item-not-found"
            # A ping of another occupant goes to bob's client and comes back.
            await ping.ping(f"{room}/bob", timeout=STEP)
            # So does a version query, answered from bob's occupant JID.
            version = await a.plugin["xep_0092"].get_version(JID(f"{room}/bob"), timeout=STEP)
            assert version["from"] == JID(f"{room}/bob")
            assert version["software_version"]["name"]
            # An error from bob's client comes back as it is.
            iq = a.make_iq_get(ito=f"{room}/bob")
            iq.xml.append(iq.xml.makeelement("{urn:example:unknown}query", {}))
            assert await iq_error(iq.send(timeout=STEP)) in ("service-unavailable",
                                                              "feature-not-implemented")
            # After leaving, the self-ping says so.
            a.make_presence(pto=f"{room}/mum", ptype="unavailable").send()
            await a.next_presence(lambda q: q["type"] == "unavailable" and 110 in codes(q))
            assert await iq_error(ping.ping(f"{room}/mum", timeout=STEP)) == "not-acceptable"
    run(scenario())


def tiny_png() -> bytes:
    return base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def vcard_iq(c, room: str, photo: bytes | None, pad: int = 0):
    iq = c.make_iq_set(ito=room)
    v = iq.xml.makeelement(f"{{{NS_VCARD}}}vCard", {})
    if photo is not None:
        p = v.makeelement(f"{{{NS_VCARD}}}PHOTO", {})
        t = p.makeelement(f"{{{NS_VCARD}}}TYPE", {})
        t.text = "image/png"
        bv = p.makeelement(f"{{{NS_VCARD}}}BINVAL", {})
        bv.text = base64.b64encode(photo).decode()
        p.extend([t, bv])
        v.append(p)
    if pad:
        d = v.makeelement(f"{{{NS_VCARD}}}DESC", {})
        d.text = "x" * pad
        v.append(d)
    iq.xml.append(v)
    return iq.send(timeout=STEP)


def roominfo(info) -> dict:
    x = info.xml.find(f"{{{NS_DISCO_INFO}}}query/{{{NS_DATA}}}x")
    return form_values(x)


def test_room_picture(kith):
    async def scenario():
        async with online(kith, "alice") as a, online(kith, "bob") as b, \
                online(kith, "carol") as c:
            watch(a), watch(b), watch(c)
            room = await create(a, "kitchen", "mum")
            await set_aff(a, room, f"bob@{DOMAIN}", "member")
            await enter(b, room, "bob")
            await subject(b, room)
            info = await b.plugin["xep_0030"].get_info(jid=room, timeout=STEP)
            assert NS_VCARD in info["disco_info"]["features"]
            assert "muc#roominfo_avatarhash" not in roominfo(info)
            png = tiny_png()
            sha1 = hashlib.sha1(png).hexdigest()
            await vcard_iq(a, room, png)
            # Occupants hear of it: a presence from the room with the hash, and 104.
            p = await b.next_presence(lambda q: q["from"] == JID(room))
            assert p.xml.findtext("{vcard-temp:x:update}x/{vcard-temp:x:update}photo") == sha1
            notice = await message(b, lambda m: m["from"] == JID(room) and 104 in
                                   {int(s.get("code")) for s in
                                    (muc_x(m).findall(f"{{{NS_USER}}}status")
                                     if muc_x(m) is not None else [])})
            assert notice["type"] == "groupchat"
            info = await b.plugin["xep_0030"].get_info(jid=room, timeout=STEP)
            assert roominfo(info)["muc#roominfo_avatarhash"] == [sha1]
            # Members read it.
            got = await b.plugin["xep_0054"].get_vcard(JID(room), timeout=STEP)
            binval = got.xml.findtext(f"{{{NS_VCARD}}}vCard/{{{NS_VCARD}}}PHOTO/{{{NS_VCARD}}}BINVAL")
            assert base64.b64decode(binval) == png
            # Only owners set it; strangers to a hidden room do not read it.
            assert await iq_error(vcard_iq(b, room, png)) == "forbidden"
            assert await iq_error(c.plugin["xep_0054"].get_vcard(JID(room), timeout=STEP)) \
                == "forbidden"
            # Too big.
            assert await iq_error(vcard_iq(a, room, png, pad=140_000)) == "not-acceptable"
        # It survives a restart; an empty vCard removes it.
        kith.stop()
        kith.start()
        async with online(kith, "alice") as a:
            info = await a.plugin["xep_0030"].get_info(jid=room, timeout=STEP)
            assert roominfo(info)["muc#roominfo_avatarhash"] == [sha1]
            await vcard_iq(a, room, None)
            info = await a.plugin["xep_0030"].get_info(jid=room, timeout=STEP)
            assert "muc#roominfo_avatarhash" not in roominfo(info)
    run(scenario())
