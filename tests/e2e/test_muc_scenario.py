"""Group chats (XEP-0045) as a household uses them, end to end, with real clients.

Every scenario here runs the real `kith` binary and slixmpp clients using its `xep_0045`
plugin (config forms, affiliations, roles, invites), `xep_0313` (the room's archive) and
`xep_0249` (direct invitations); what slixmpp only half-exposes (status codes, the real JID
in `<item/>`, `<stanza-id/>`) is read from the stanzas themselves.

- three users create a reserved room through the configuration form, join, chat, see one
  another with status codes and real JIDs, change a nick, hit a nick conflict, get kicked
  and banned, and leave;
- a fourth joins later and catches up from the room's archive (MUC MAM);
- the room, its configuration, members, subject and history survive a restart;
- a members-only room refuses a non-member; members (not outsiders) read the member list
  of a non-anonymous room, as OMEMO clients must;
- a Gajim-like client does exactly what Gajim does: finds the service, creates a
  members-only room, invites two people, they join and talk, the server restarts, and the
  conversation is still in the room's archive.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import xml.etree.ElementTree as ET

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004.stanza import Form
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from conftest import DOMAIN, STEP, online, run

ROOMS = f"groups.{DOMAIN}"  # the household's MUC service

NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = f"{NS_MUC}#user"
NS_DATA = "jabber:x:data"
NS_SID = "urn:xmpp:sid:0"
NS_MAM = "urn:xmpp:mam:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_DELAY = "urn:xmpp:delay"
NS_CONFERENCE = "jabber:x:conference"
NS_CLIENT = "jabber:client"

# What the scenarios ask of a family room (XEP-0045 §15.5.3 field names; the archiving
# field is the one XEP-0313 servers share, `muc#roomconfig_enablearchiving`).
FAMILY_ROOM = {
    "muc#roomconfig_roomname": "Family",
    "muc#roomconfig_roomdesc": "Sunday lunches and everything else",
    "muc#roomconfig_persistentroom": True,
    "muc#roomconfig_membersonly": True,
    "muc#roomconfig_whois": "anyone",
    "muc#roomconfig_publicroom": False,
    "muc#roomconfig_enablearchiving": True,
}
# Fields the form must offer: the household's choices above are made with them.
REQUIRED_FIELDS = ("muc#roomconfig_roomname", "muc#roomconfig_roomdesc",
                   "muc#roomconfig_persistentroom", "muc#roomconfig_membersonly",
                   "muc#roomconfig_whois", "muc#roomconfig_publicroom")

MUC_PLUGINS = ("xep_0004", "xep_0045", "xep_0059", "xep_0249", "xep_0313", "xep_0359")


@pytest.fixture
def household(kith_factory):
    """The household's server: alice, bob, carol, dave (joins later) and eve (never a
    member of anything)."""
    k = kith_factory()
    for user in ("alice", "bob", "carol", "dave", "eve"):
        k.add_user(user)
    return k.start()


# --------------------------------------------------------------------------- helpers


@contextlib.asynccontextmanager
async def member(server, user: str, resource: str = "phone"):
    """`online()` with the MUC plugins, and a queue of *every* message (slixmpp's own
    `message` event only fires for messages with a body: no subjects, no invites)."""
    async with online(server, user, resource) as c:
        for p in MUC_PLUGINS:
            c.register_plugin(p)
        c.stanzas = asyncio.Queue()
        c.register_handler(Callback(f"all messages {user}",
                                    MatchXPath(f"{{{NS_CLIENT}}}message"),
                                    c.stanzas.put_nowait))
        yield c


async def until(queue: asyncio.Queue, match, what: str, timeout: float = STEP):
    """The first stanza of `queue` that `match`es. Stanzas passed over stay available to
    later calls (in `queue.backlog`): a join's occupant presences arrive before the
    self-presence that `enter()` waits for, and a scenario reads them afterwards."""
    backlog = queue.__dict__.setdefault("backlog", [])
    for i, item in enumerate(backlog):
        if match(item):
            return backlog.pop(i)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        try:
            item = await asyncio.wait_for(queue.get(), max(left, 0.01))
        except asyncio.TimeoutError:
            raise AssertionError(f"no {what} within {timeout}s; last passed over: "
                                 + "; ".join(str(s)[:300] for s in backlog[-5:])) from None
        if match(item):
            return item
        backlog.append(item)


def drain(queue: asyncio.Queue) -> list:
    """Everything `queue` holds now, passed-over stanzas included."""
    out = queue.__dict__.setdefault("backlog", [])
    queue.backlog = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def muc_user(stanza) -> ET.Element | None:
    return stanza.xml.find(f"{{{NS_MUC_USER}}}x")


def codes(stanza) -> set[int]:
    """The XEP-0045 status codes of a presence or message."""
    x = muc_user(stanza)
    if x is None:
        return set()
    return {int(s.get("code")) for s in x.findall(f"{{{NS_MUC_USER}}}status")}


def item(stanza) -> dict:
    """affiliation, role, jid, nick of the `<item/>` of a MUC presence ({} if none)."""
    x = muc_user(stanza)
    it = x.find(f"{{{NS_MUC_USER}}}item") if x is not None else None
    return dict(it.attrib) if it is not None else {}


def is_from(stanza, room: str, nick: str | None = None) -> bool:
    f = stanza["from"]
    return f.bare == room and (nick is None or f.resource == nick)


async def presence_of(client, room: str, nick: str, *, unavailable: bool = False,
                      what: str | None = None):
    """The next presence from occupant `room/nick`, available or unavailable."""
    def match(p):
        return is_from(p, room, nick) and (p["type"] == "unavailable") == unavailable
    kind = "unavailable" if unavailable else "available"
    return await until(client.presences, match,
                       what or f"{kind} presence of {room}/{nick} at {client.boundjid}")


def join_presence(client, room: str, nick: str, history: dict | None = None):
    p = client.make_presence(pto=f"{room}/{nick}")
    x = ET.SubElement(p.xml, f"{{{NS_MUC}}}x")
    if history is not None:
        ET.SubElement(x, f"{{{NS_MUC}}}history", {k: str(v) for k, v in history.items()})
    return p


async def enter(client, room: str, nick: str, history: dict | None = None):
    """Join `room` as `nick`: the self-presence (status 110), or AssertionError with the
    error the room answered."""
    join_presence(client, room, nick, history).send()
    p = await until(client.presences,
                    lambda p: is_from(p, room) and (
                        p["type"] == "error" or (p["type"] != "unavailable" and 110 in codes(p))),
                    f"self-presence from {room} for {client.boundjid}")
    assert p["type"] != "error", (f"{client.boundjid} could not join {room}/{nick}: "
                                  f"{p['error']['type']}/{p['error']['condition']}")
    assert p["from"].resource == nick, f"joined as {p['from']}, asked for {nick}"
    return p


async def refused(client, room: str, nick: str) -> tuple[str, str]:
    """Try to join; assert the room refuses; (error type, condition)."""
    join_presence(client, room, nick).send()
    p = await until(client.presences,
                    lambda p: is_from(p, room) and (p["type"] == "error" or 110 in codes(p)),
                    f"answer of {room} to {client.boundjid}'s join")
    assert p["type"] == "error", f"{client.boundjid} was let into {room}: {p}"
    return p["error"]["type"], p["error"]["condition"]


async def leave(client, room: str, nick: str):
    """Leave the room; returns the self unavailable presence (110)."""
    client.send_presence(pto=f"{room}/{nick}", ptype="unavailable")
    return await until(client.presences,
                       lambda p: is_from(p, room, nick) and p["type"] == "unavailable"
                       and 110 in codes(p), f"{client.boundjid}'s own exit from {room}")


def say(client, room: str, body: str):
    client.send_message(mto=room, mbody=body, mtype="groupchat")


def delayed(msg) -> bool:
    return msg.xml.find(f"{{{NS_DELAY}}}delay") is not None


async def heard(client, room: str, nick: str, body: str):
    """The live (not history) groupchat message `body` from `room/nick`."""
    return await until(client.stanzas,
                       lambda m: m["type"] == "groupchat" and is_from(m, room, nick)
                       and m["body"] == body and not delayed(m),
                       f"groupchat {body!r} from {room}/{nick} at {client.boundjid}")


def stanza_id(msg, room: str) -> str:
    """The room's XEP-0359 `<stanza-id by='room'/>` on a groupchat message."""
    ids = [s.get("id") for s in msg.xml.findall(f"{{{NS_SID}}}stanza-id")
           if s.get("by") == room]
    assert len(ids) == 1 and ids[0], (f"expected one <stanza-id by='{room}'/> on "
                                      f"{msg['body']!r}: {msg}")
    return ids[0]


async def conversation(room: str, lines, listeners) -> list[tuple[str, str]]:
    """Each (client, nick, body) says its line; every listener (and the sender, via the
    room's reflection) hears it live with the same stanza id. Returns (id, body) in order."""
    out = []
    for client, nick, body in lines:
        say(client, room, body)
        ids = set()
        for other in {*listeners, client}:
            ids.add(stanza_id(await heard(other, room, nick, body), room))
        assert len(ids) == 1, f"{body!r} reached the occupants with different ids {ids}"
        out.append((ids.pop(), body))
    return out


async def room_archive(client, room: str) -> list[tuple[str, str, str]]:
    """The room's MAM archive as (archive id, occupant JID, body), oldest first; only
    messages with a body (a subject change may be archived too)."""
    res = await client.plugin["xep_0313"].retrieve(jid=JID(room), rsm={"max": "100"},
                                                   timeout=STEP)
    fin = res.xml.find(f"{{{NS_MAM}}}fin")
    assert fin is not None and fin.get("complete") == "true", f"archive not complete: {res}"
    out = []
    for m in res["mam"]["results"]:
        result = m.xml.find(f"{{{NS_MAM}}}result")
        fwd = result.find(f"{{{NS_FORWARD}}}forwarded/{{{NS_CLIENT}}}message")
        assert fwd is not None, f"result without a forwarded message: {m}"
        assert fwd.get("to") is None, "XEP-0313 §6.1.2: no 'to' on archived MUC messages"
        assert result.find(f"{{{NS_FORWARD}}}forwarded/{{{NS_DELAY}}}delay") is not None
        body = fwd.findtext(f"{{{NS_CLIENT}}}body")
        if body is not None:
            out.append((result.get("id"), fwd.get("from"), body))
    return out


async def fill_form(client, room: str, values: dict) -> dict:
    """What Gajim does with a room's configuration form: fetch it, set the values of the
    fields it has, submit every field back. Returns the form's fields (var → type)."""
    form = await client.plugin["xep_0045"].get_room_config(room, timeout=STEP)
    fields = {var: f["type"] for var, f in form.get_fields().items() if var}
    submit = Form()
    submit["type"] = "submit"
    for var, field in form.get_fields().items():
        if not var or field["type"] == "fixed":
            continue
        value = values.get(var, field.get_value(convert=False))
        if field["type"] == "boolean" and isinstance(value, bool):
            value = "1" if value else "0"
        submit.add_field(var=var, ftype=field["type"] if var == "FORM_TYPE" else None,
                         value=value)
    await client.plugin["xep_0045"].set_room_config(room, submit, timeout=STEP)
    return fields


async def create_room(client, room: str, nick: str, config: dict = FAMILY_ROOM) -> dict:
    """Create a reserved room (XEP-0045 §10.1.3): join, get 201, fill and submit the form.
    Returns the form's fields."""
    p = await enter(client, room, nick)
    assert {110, 201} <= codes(p), f"creation self-presence codes {codes(p)}"
    it = item(p)
    assert (it.get("affiliation"), it.get("role")) == ("owner", "moderator"), it
    fields = await fill_form(client, room, config)
    missing = [f for f in REQUIRED_FIELDS if f not in fields]
    assert not missing, f"the room configuration form lacks {missing}"
    return fields


async def room_info(client, room: str) -> tuple[set, set, dict]:
    """disco#info of a room: identities (category, type, name), features, the
    muc#roominfo form (var → first value)."""
    info = await client.plugin["xep_0030"].get_info(room, cached=False, timeout=STEP)
    identities = {(i[0], i[1], i[3]) for i in info["disco_info"]["identities"]}
    features = set(info["disco_info"]["features"])
    roominfo = {}
    for x in info.xml.iter(f"{{{NS_DATA}}}x"):
        for f in x.findall(f"{{{NS_DATA}}}field"):
            roominfo[f.get("var")] = f.findtext(f"{{{NS_DATA}}}value")
    return identities, features, roominfo


async def make_members(owner, room: str, *users: str, affiliation: str = "member"):
    for u in users:
        await owner.plugin["xep_0045"].set_affiliation(room, affiliation, jid=f"{u}@{DOMAIN}",
                                                       timeout=STEP)


async def affiliation_list(client, room: str, affiliation: str) -> set[str]:
    jids = await client.plugin["xep_0045"].get_affiliation_list(room, affiliation,
                                                                timeout=STEP)
    return {str(j) for j in jids}


def is_subject(m, room: str, text: str | None = None) -> bool:
    """A subject message from `room` (XEP-0045 §8.1: a <subject/> and no <body/>), with
    `text` if given."""
    subject = m.xml.find(f"{{{NS_CLIENT}}}subject")
    return (m["type"] == "groupchat" and is_from(m, room) and subject is not None
            and not m["body"] and (text is None or (subject.text or "") == text))


async def subject_of(client, room: str) -> str:
    """The text of the subject message a room sends after the presences and history of
    a join."""
    m = await until(client.stanzas, lambda m: is_subject(m, room),
                    f"subject from {room} at {client.boundjid}")
    return m.xml.findtext(f"{{{NS_CLIENT}}}subject") or ""


async def set_subject(client, room: str, text: str):
    """Change the subject; returns once the room has sent the change to `client`."""
    client.plugin["xep_0045"].set_subject(room, text)
    await until(client.stanzas, lambda m: is_subject(m, room, text),
                f"subject {text!r} from {room} at {client.boundjid}")


def stable(info: tuple[set, set, dict]) -> tuple[set, set, dict]:
    """A room's disco#info without what changes as people come and go."""
    identities, features, roominfo = info
    return identities, features, {k: v for k, v in roominfo.items()
                                  if k != "muc#roominfo_occupants"}


def new_room(name: str) -> str:
    return f"{name}-{secrets.token_hex(3)}@{ROOMS}"


# --------------------------------------------------------------------------- scenarios


def test_three_users_create_chat_change_nicks_moderate_and_leave(household):
    async def scenario():
        room = new_room("family")
        async with member(household, "alice") as alice, member(household, "bob") as bob, \
                member(household, "carol") as carol:
            # Alice finds the household's group-chat service.
            info = await alice.plugin["xep_0030"].get_info(ROOMS, cached=False, timeout=STEP)
            assert ("conference", "text") in {(i[0], i[1])
                                              for i in info["disco_info"]["identities"]}
            assert NS_MUC in info["disco_info"]["features"]

            # A reserved room, configured through the form before anyone else may enter.
            await create_room(alice, room, "Alice")
            identities, features, roominfo = await room_info(alice, room)
            assert ("conference", "text", "Family") in identities, identities
            for f in ("muc_membersonly", "muc_nonanonymous", "muc_persistent", "muc_hidden",
                      NS_MUC):
                assert f in features, f"{f} not in the room's features {features}"
            assert roominfo.get("muc#roominfo_description") == FAMILY_ROOM[
                "muc#roomconfig_roomdesc"], roominfo
            await make_members(alice, room, "bob", "carol")
            assert await affiliation_list(alice, room, "member") == {
                f"bob@{DOMAIN}", f"carol@{DOMAIN}"}
            await set_subject(alice, room, "Sunday lunch")

            # Bob enters: a non-anonymous room says so (100) and shows real JIDs.
            me = await enter(bob, room, "Bob")
            assert {110, 100} <= codes(me), f"bob's self-presence codes {codes(me)}"
            assert item(me).get("affiliation") == "member"
            assert item(me).get("role") == "participant"
            assert await subject_of(bob, room) == "Sunday lunch"
            # ... having first seen who is there, with real JIDs.
            a = await presence_of(bob, room, "Alice")
            assert JID(item(a)["jid"]) == alice.boundjid, item(a)
            assert item(a)["affiliation"] == "owner" and item(a)["role"] == "moderator"
            b = await presence_of(alice, room, "Bob")
            assert JID(item(b)["jid"]) == bob.boundjid, item(b)

            me = await enter(carol, room, "Carol")
            assert {110, 100} <= codes(me)
            for c in (alice, bob):
                p = await presence_of(c, room, "Carol")
                assert JID(item(p)["jid"]) == carol.boundjid, item(p)
                assert 110 not in codes(p), "110 is only for one's own presence"
            for nick in ("Alice", "Bob"):
                await presence_of(carol, room, nick)

            # They talk: everyone, the sender included, gets each line with one stanza id.
            everyone = (alice, bob, carol)
            await conversation(room, [(alice, "Alice", "Who brings dessert?"),
                                      (bob, "Bob", "I do."),
                                      (carol, "Carol", "I bring the kids.")], everyone)

            # Bob becomes Robert (§7.6): unavailable with 303 and the new nick, then
            # available under the new nick; 110 on his own copies.
            bob.send_presence(pto=f"{room}/Robert")
            for c in everyone:
                gone = await presence_of(c, room, "Bob", unavailable=True)
                assert 303 in codes(gone), f"nick change without 303: {codes(gone)}"
                assert item(gone).get("nick") == "Robert", item(gone)
                back = await presence_of(c, room, "Robert")
                assert (110 in codes(gone)) == (c is bob) == (110 in codes(back))
            await conversation(room, [(bob, "Robert", "Robert now.")], everyone)

            # Carol wants "Alice": taken, refused with <conflict/> (409); she stays Carol.
            carol.send_presence(pto=f"{room}/Alice")
            err = await until(carol.presences,
                              lambda p: is_from(p, room) and p["type"] == "error",
                              "nick conflict error")
            assert err["error"]["condition"] == "conflict", err
            assert err["error"]["type"] == "cancel", err
            await conversation(room, [(carol, "Carol", "Still Carol.")], everyone)

            # A moderator kicks Carol (307): she is out, but may come back.
            await alice.plugin["xep_0045"].set_role(room, "Carol", "none",
                                                    reason="time out", timeout=STEP)
            out = await presence_of(carol, room, "Carol", unavailable=True)
            assert {307, 110} <= codes(out), f"kicked self-presence codes {codes(out)}"
            assert item(out).get("role") == "none"
            for c in (alice, bob):
                out = await presence_of(c, room, "Carol", unavailable=True)
                assert 307 in codes(out) and 110 not in codes(out), codes(out)
            await enter(carol, room, "Carol")
            for c in (alice, bob):
                await presence_of(c, room, "Carol")

            # The owner bans her (301): out, outcast, and the door stays shut (403).
            await alice.plugin["xep_0045"].set_affiliation(
                room, "outcast", jid=f"carol@{DOMAIN}", reason="enough", timeout=STEP)
            out = await presence_of(carol, room, "Carol", unavailable=True)
            assert {301, 110} <= codes(out), f"banned self-presence codes {codes(out)}"
            assert item(out).get("affiliation") == "outcast"
            for c in (alice, bob):
                out = await presence_of(c, room, "Carol", unavailable=True)
                assert 301 in codes(out), codes(out)
            etype, cond = await refused(carol, room, "Carol")
            assert (etype, cond) == ("auth", "forbidden"), (etype, cond)
            assert await affiliation_list(alice, room, "outcast") == {f"carol@{DOMAIN}"}
            assert await affiliation_list(alice, room, "member") == {f"bob@{DOMAIN}"}

            # Robert leaves; alice sees him go (no kick, no ban code).
            await leave(bob, room, "Robert")
            out = await presence_of(alice, room, "Robert", unavailable=True)
            assert not ({301, 307, 110} & codes(out)), codes(out)
            # The room goes on without them.
            await conversation(room, [(alice, "Alice", "Just me then.")], [alice])

    run(scenario(), timeout=120)


def test_a_later_member_catches_up_from_the_room_archive(household):
    async def scenario():
        room = new_room("kitchen")
        async with member(household, "alice") as alice, member(household, "bob") as bob:
            await create_room(alice, room, "Alice")
            _, features, _ = await room_info(alice, room)
            assert NS_MAM in features, f"the room does not advertise {NS_MAM}: {features}"
            await make_members(alice, room, "bob")
            await enter(bob, room, "Bob")
            lines = [(alice if i % 2 == 0 else bob, "Alice" if i % 2 == 0 else "Bob",
                      f"line {i} {secrets.token_hex(3)}") for i in range(6)]
            said = await conversation(room, lines, (alice, bob))

            async with member(household, "dave") as dave:
                # Not a member yet: the room and its archive are closed to him.
                etype, cond = await refused(dave, room, "Dave")
                assert (etype, cond) == ("auth", "registration-required"), (etype, cond)
                with pytest.raises(IqError) as e:
                    await room_archive(dave, room)
                assert e.value.iq["error"]["condition"] == "forbidden", e.value.iq

                await make_members(alice, room, "dave")
                # Dave takes no history on join (as Gajim does) and reads the archive.
                await enter(dave, room, "Dave", history={"maxchars": 0})
                archive = await room_archive(dave, room)
                assert [(i, b) for i, _, b in archive] == said, archive
                senders = [JID(f) for _, f, _ in archive]
                assert all(s.bare == room for s in senders), senders
                assert [s.resource for s in senders] == [n for _, n, _ in lines]
                # The members' copies agree, and the conversation goes on with him.
                assert await room_archive(bob, room) == archive
                await conversation(room, [(dave, "Dave", "Hi all, I read it all.")],
                                   (alice, bob, dave))

    run(scenario(), timeout=90)


def test_the_room_its_members_subject_and_history_survive_a_restart(household):
    async def scenario(phase: str, room: str, state: dict):
        async with member(household, "alice") as alice, member(household, "bob") as bob:
            if phase == "before":
                fields = await create_room(alice, room, "Alice")
                await make_members(alice, room, "bob", "carol")
                await make_members(alice, room, "dave", affiliation="admin")
                await set_subject(alice, room, "Holidays 2027")
                await enter(bob, room, "Bob")
                state["said"] = await conversation(
                    room, [(alice, "Alice", "Sea or mountains?"), (bob, "Bob", "Sea!")],
                    (alice, bob))
                state["archive"] = await room_archive(alice, room)
                state["info"] = await room_info(alice, room)
                state["fields"] = fields
                return
            # After the restart: the same room, as it was left.
            assert stable(await room_info(alice, room)) == stable(state["info"])
            form = await alice.plugin["xep_0045"].get_room_config(room, timeout=STEP)
            values = {var: f.get_value() for var, f in form.get_fields().items()}
            for var, want in FAMILY_ROOM.items():
                if var in state["fields"]:
                    assert values.get(var) == want, f"{var}: {values.get(var)!r} != {want!r}"
            assert await affiliation_list(alice, room, "member") == {f"bob@{DOMAIN}",
                                                                     f"carol@{DOMAIN}"}
            assert await affiliation_list(alice, room, "admin") == {f"dave@{DOMAIN}"}
            assert await affiliation_list(alice, room, "owner") == {f"alice@{DOMAIN}"}
            me = await enter(alice, room, "Alice")
            assert item(me).get("affiliation") == "owner"
            # Bob rejoins: history on join and the subject are still there.
            await enter(bob, room, "Bob", history={"maxstanzas": 10})
            history = []
            while len(history) < len(state["said"]):
                m = await until(bob.stanzas, lambda m: m["body"] and delayed(m),
                                "history message after the restart")
                history.append(m["body"])
            assert history == [b for _, b in state["said"]], history
            assert await subject_of(bob, room) == "Holidays 2027"
            assert await room_archive(bob, room) == state["archive"]
            async with member(household, "eve") as eve:
                assert await refused(eve, room, "Eve") == ("auth", "registration-required")

    room, state = new_room("holidays"), {}
    run(scenario("before", room, state), timeout=60)
    household.stop()
    household.start()
    run(scenario("after", room, state), timeout=60)


def test_a_members_only_room_refuses_a_non_member(household):
    async def scenario():
        room = new_room("secret")
        async with member(household, "alice") as alice, member(household, "eve") as eve:
            await create_room(alice, room, "Alice")
            assert await refused(eve, room, "Eve") == ("auth", "registration-required")
            # No presence of hers reached the room.
            await alice.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
            assert not any(is_from(p, room, "Eve") for p in drain(alice.presences))
            # A message from outside does not reach the occupants either.
            eve.send_message(mto=room, mbody="let me in", mtype="groupchat")
            err = await until(eve.stanzas, lambda m: m["type"] == "error" and is_from(m, room),
                              "error for a groupchat message from a non-occupant")
            assert err["error"]["condition"] in ("not-acceptable", "forbidden"), err
            await alice.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
            assert not any(m["body"] == "let me in" for m in drain(alice.stanzas))

    run(scenario(), timeout=60)


def test_members_read_the_member_list_of_a_non_anonymous_room_for_omemo(household):
    """OMEMO clients (Conversations, Dino, Gajim) encrypt to every member, present or not:
    they read the owner, admin and member lists of a non-anonymous members-only room and
    fetch each real JID's devices. An outsider gets nothing."""
    async def scenario():
        room = new_room("omemo")
        async with member(household, "alice") as alice, member(household, "bob") as bob, \
                member(household, "eve") as eve:
            await create_room(alice, room, "Alice")
            _, features, _ = await room_info(bob, room)
            assert {"muc_nonanonymous", "muc_membersonly"} <= features, features
            await make_members(alice, room, "bob", "dave")
            await make_members(alice, room, "carol", affiliation="admin")
            # Bob is a member who is not even in the room (carol and dave never joined).
            want = {"owner": {f"alice@{DOMAIN}"}, "admin": {f"carol@{DOMAIN}"},
                    "member": {f"bob@{DOMAIN}", f"dave@{DOMAIN}"}}
            for aff, jids in want.items():
                got = await affiliation_list(bob, room, aff)
                assert got == jids, f"{aff} list as bob: {got} != {jids}"
            await enter(bob, room, "Bob")
            for aff, jids in want.items():
                assert await affiliation_list(bob, room, aff) == jids
            for aff in want:
                with pytest.raises(IqError) as e:
                    await affiliation_list(eve, room, aff)
                assert e.value.iq["error"]["condition"] == "forbidden", e.value.iq

    run(scenario(), timeout=60)


# --------------------------------------------------------------------------- Gajim


# Gajim's defaults for a new group chat (gajim/common/util/muc.py, get_default_muc_config)
# plus what its "Create group chat" dialog adds for a private group.
GAJIM_CONFIG = {
    "muc#roomconfig_allowinvites": True,
    "muc#roomconfig_allowpm": "anyone",
    "muc#roomconfig_changesubject": False,
    "muc#roomconfig_enablelogging": False,
    "muc#roomconfig_membersonly": True,
    "muc#roomconfig_moderatedroom": False,
    "muc#roomconfig_passwordprotectedroom": False,
    "muc#roomconfig_persistentroom": True,
    "muc#roomconfig_publicroom": False,
    "muc#roomconfig_whois": "anyone",
    "muc#roomconfig_enablearchiving": True,
    "muc#roomconfig_roomname": "Book club",
    "muc#roomconfig_roomdesc": "What we read next",
}


async def gajim_finds_the_service(client) -> str:
    """Gajim's start-up discovery: the server's items, the one that is conference/text
    with the MUC feature."""
    disco = client.plugin["xep_0030"]
    items = await disco.get_items(DOMAIN, timeout=STEP)
    for jid in (str(i[0]) for i in items["disco_items"]["items"]):
        info = await disco.get_info(jid, cached=False, timeout=STEP)
        kinds = {(i[0], i[1]) for i in info["disco_info"]["identities"]}
        if ("conference", "text") in kinds and NS_MUC in info["disco_info"]["features"]:
            return jid
    raise AssertionError(f"no MUC service among {DOMAIN}'s items")


async def gajim_accepts(client, room: str, nick: str):
    """An invitee's Gajim: disco the room, join it without history, read the archive."""
    _, features, _ = await room_info(client, room)
    assert NS_MUC in features
    await enter(client, room, nick, history={"maxchars": 0})
    if NS_MAM in features:
        return await room_archive(client, room)
    return None


def test_a_gajim_like_client_creates_a_members_only_room_invites_two_and_the_archive_survives_a_restart(household):  # noqa: E501
    state: dict = {}

    async def before():
        async with member(household, "alice", "gajim") as alice, \
                member(household, "bob", "gajim") as bob, \
                member(household, "carol", "gajim") as carol:
            service = await gajim_finds_the_service(alice)
            assert service == ROOMS
            room = f"bookclub-{secrets.token_hex(3)}@{service}"
            state["room"] = room
            # Create: a join presence, 201, then the form, Gajim's values applied.
            p = await enter(alice, room, "alice")
            assert {110, 201} <= codes(p), codes(p)
            await fill_form(alice, room, GAJIM_CONFIG)
            _, features, _ = await room_info(alice, room)  # Gajim re-discos after config
            assert {"muc_membersonly", "muc_nonanonymous", "muc_persistent",
                    NS_MAM} <= features, features

            # Bob: what Gajim does as an owner of a members-only room — make him a member,
            # then a direct invitation (XEP-0249).
            await make_members(alice, room, "bob")
            alice.plugin["xep_0249"].send_invitation(JID(f"bob@{DOMAIN}"), JID(room),
                                                     reason="join our book club")
            inv = await until(bob.stanzas,
                              lambda m: m.xml.find(f"{{{NS_CONFERENCE}}}x") is not None,
                              "direct invitation at bob")
            assert inv["from"].bare == f"alice@{DOMAIN}"
            assert inv.xml.find(f"{{{NS_CONFERENCE}}}x").get("jid") == room
            assert await gajim_accepts(bob, room, "bob") == []
            await presence_of(alice, room, "bob")

            # Carol: a mediated invitation through the room (XEP-0045 §7.8.2), as older
            # Gajims and other clients send, after the same membership grant.
            await make_members(alice, room, "carol")
            alice.plugin["xep_0045"].invite(room, f"carol@{DOMAIN}", reason="you too")
            inv = await until(carol.stanzas,
                              lambda m: is_from(m, room) and muc_user(m) is not None
                              and muc_user(m).find(f"{{{NS_MUC_USER}}}invite") is not None,
                              "mediated invitation at carol")
            invite = muc_user(inv).find(f"{{{NS_MUC_USER}}}invite")
            assert JID(invite.get("from")).bare == f"alice@{DOMAIN}", ET.tostring(invite)
            assert invite.findtext(f"{{{NS_MUC_USER}}}reason") == "you too"
            assert inv["from"] == JID(room), "a mediated invitation comes from the room"
            await gajim_accepts(carol, room, "carol")
            for c in (alice, bob):
                await presence_of(c, room, "carol")

            state["said"] = await conversation(room, [
                (alice, "alice", "First book: Middlemarch?"),
                (bob, "bob", "Too long."),
                (carol, "carol", "Perfect for winter."),
                (alice, "alice", "Middlemarch it is."),
            ], (alice, bob, carol))
            state["archive"] = await room_archive(alice, room)
            assert [(i, b) for i, _, b in state["archive"]] == state["said"]

    async def after():
        room = state["room"]
        async with member(household, "alice", "gajim") as alice, \
                member(household, "carol", "gajim") as carol:
            # Gajim rejoins its bookmarked rooms and catches up from the archive.
            for c, nick in ((alice, "alice"), (carol, "carol")):
                archive = await gajim_accepts(c, room, nick)
                assert archive == state["archive"], archive
            await conversation(room, [(carol, "carol", "Chapter one done.")], (alice, carol))

    run(before(), timeout=90)
    household.stop()
    household.start()
    run(after(), timeout=60)
