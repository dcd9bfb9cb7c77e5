"""Alice's phone and laptop: one account, two devices, a phone that sleeps and loses signal.

The household scenario of issue 4, with real slixmpp clients (resources `phone` and
`laptop`) and bob as the friend:

- carbons (XEP-0280): what the laptop sends shows on the phone, and a message to alice's
  bare JID reaches both;
- MAM catch-up (XEP-0313): the phone was off while bob and the laptop chatted; it asks the
  archive for everything since it left and gets exactly the missed messages, in order;
- stream management (XEP-0198): the phone's TCP connection dies, bob writes five
  messages, the phone resumes and gets each exactly once;
- `kill -9`: bob's messages are acked by the server while the phone is offline, the
  server is killed and restarted on the same data dir, and the phone gets each message
  exactly once (offline delivery and the archive agree on stanza ids, so a client that
  uses both shows no duplicates).
"""

import asyncio
import contextlib
import signal
import socket
from datetime import datetime, timedelta, timezone

import pytest
import slixmpp

from conftest import DOMAIN, STEP, Client, run

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
NS_SID = "urn:xmpp:sid:0"
NS_MAM = "urn:xmpp:mam:2"


@contextlib.asynccontextmanager
async def device(kith, user: str, resource: str, *, priority: int = 0, plugins=()):
    """A logged-in slixmpp client with extra plugins registered before it connects."""
    c = Client(kith, f"{user}@{DOMAIN}/{resource}")
    for p in plugins:
        c.register_plugin(p)
    c.resumed = asyncio.get_running_loop().create_future()
    c.add_event_handler("session_resumed",
                        lambda _: c.resumed.done() or c.resumed.set_result(True))
    try:
        await c.login()
        await c.get_roster(timeout=STEP)
        c.send_presence(ppriority=priority)
        await c.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
        yield c
    finally:
        await c.close()


def arrivals(c: Client) -> asyncio.Queue:
    """Bodies that reach `c`, directly or as a <received/> carbon: ("direct"|"carbon", body)."""
    q: asyncio.Queue = asyncio.Queue()
    c.add_event_handler("message", lambda m: m["body"] and m["type"] != "error"
                        and q.put_nowait(("direct", m["body"])))
    c.add_event_handler("carbon_received",
                        lambda m: q.put_nowait(("carbon", m["carbon_received"]["body"])))
    return q


async def next_body(q: asyncio.Queue, body: str):
    while True:
        how, got = await asyncio.wait_for(q.get(), STEP)
        if got == body:
            return how


async def bodies(c: Client, wanted: set, *, quiet: float = 1.0) -> list:
    """Every body from `wanted` that reaches `c` until `quiet` seconds pass with none."""
    got = []
    while True:
        try:
            msg = await c.next_message(timeout=quiet if len(got) >= len(wanted) else STEP)
        except asyncio.TimeoutError:
            return got
        if msg["body"] in wanted:
            got.append(msg)


def drop_connection(c: Client):
    """The phone loses signal: the socket is reset, no </stream:stream> is sent."""
    sock = c.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    c.transport.abort()


async def archive(c: Client, *, with_jid: str, start: datetime | None = None) -> list:
    """The archived messages with `with_jid` (since `start`), oldest first: (id, body)."""
    iq = await c.plugin["xep_0313"].retrieve(with_jid=slixmpp.JID(with_jid), start=start,
                                             rsm={"max": 50}, timeout=STEP)
    out = []
    for r in iq["mam"]["results"]:
        res = r.xml.find(f"{{{NS_MAM}}}result")
        out.append((res.get("id"), r.xml.findtext(".//{jabber:client}body")))
    return out


def stanza_id(msg) -> str | None:
    sid = msg.xml.find(f"{{{NS_SID}}}stanza-id")
    return sid.get("id") if sid is not None and sid.get("by") == ALICE else None


def test_the_laptop_and_the_phone_see_the_whole_conversation(kith):
    async def scenario():
        async with device(kith, "alice", "phone", priority=10, plugins=["xep_0280"]) as phone, \
                device(kith, "alice", "laptop", priority=5, plugins=["xep_0280"]) as laptop, \
                device(kith, "bob", "desk") as bob:
            sent_copies: asyncio.Queue = asyncio.Queue()
            phone.add_event_handler("carbon_sent", sent_copies.put_nowait)
            to_phone, to_laptop = arrivals(phone), arrivals(laptop)
            await phone.plugin["xep_0280"].enable(timeout=STEP)
            await laptop.plugin["xep_0280"].enable(timeout=STEP)

            # Alice types on the laptop; the phone shows it too.
            laptop.send_message(mto=BOB, mbody="leaving work now", mtype="chat")
            assert (await bob.next_message())["body"] == "leaving work now"
            copy = await asyncio.wait_for(sent_copies.get(), STEP)
            assert copy["carbon_sent"]["body"] == "leaving work now"
            assert str(copy["carbon_sent"]["from"]) == f"{ALICE}/laptop"

            # Bob writes to alice (bare JID): both devices get it, once each.
            bob.send_message(mto=ALICE, mbody="bring milk", mtype="chat")
            await next_body(to_phone, "bring milk")
            await next_body(to_laptop, "bring milk")
            for q in (to_phone, to_laptop):
                with contextlib.suppress(asyncio.TimeoutError):
                    extra = await asyncio.wait_for(q.get(), 1.0)
                    raise AssertionError(f"a second copy arrived: {extra}")
    run(scenario())


def test_the_phone_catches_up_from_the_archive_after_being_off(kith):
    async def scenario():
        async with device(kith, "alice", "laptop", plugins=["xep_0313"]) as laptop, \
                device(kith, "bob", "desk") as bob:
            async with device(kith, "alice", "phone", priority=10) as phone:
                bob.send_message(mto=ALICE, mbody="before you left", mtype="chat")
                assert (await phone.next_message())["body"] == "before you left"
            # The phone is off. Its "left at" is the next whole second, and what it misses
            # starts a second later: strictly before and strictly after `left`, whatever
            # the archive's timestamp precision and whether `start` is inclusive.
            now = datetime.now(timezone.utc)
            left = (now + timedelta(seconds=1)).replace(microsecond=0)
            await asyncio.sleep((left - now).total_seconds() + 1.0)
            missed = ["are you there?", "dinner is at 7", "bring the salad"]
            for body in missed:
                bob.send_message(mto=ALICE, mbody=body, mtype="chat")
                assert (await laptop.next_message())["body"] == body
            laptop.send_message(mto=BOB, mbody="the phone is off, I'll come", mtype="chat")
            assert (await bob.next_message())["body"] == "the phone is off, I'll come"
            missed.append("the phone is off, I'll come")

            async with device(kith, "alice", "phone", priority=10,
                              plugins=["xep_0313"]) as phone:
                got = await archive(phone, with_jid=BOB, start=left)
                assert [b for _, b in got] == missed, got
                assert len({i for i, _ in got}) == len(got), "archive ids must be unique"
                # Nothing was waiting offline (the laptop was online): no duplicates.
                await phone.expect_no_message(within=1.0)
    run(scenario())


def test_the_phone_resumes_after_losing_signal_and_misses_nothing(kith):
    async def scenario():
        async with device(kith, "alice", "phone", plugins=["xep_0198"]) as phone, \
                device(kith, "bob", "desk") as bob:
            sm = phone.plugin["xep_0198"]
            assert sm.enabled_in and sm.sm_id, "stream management with resumption enabled"
            bob.send_message(mto=ALICE, mbody="still there?", mtype="chat")
            assert (await phone.next_message())["body"] == "still there?"

            drop_connection(phone)
            await asyncio.wait_for(asyncio.shield(phone.gone), STEP)
            gap = [f"in the tunnel {i}" for i in range(5)]
            for body in gap:
                bob.send_message(mto=ALICE, mbody=body, mtype="chat")
            await bob.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)  # all five handled

            phone.gone = asyncio.get_running_loop().create_future()
            phone.connect("127.0.0.1", kith.c2s_port)
            await asyncio.wait_for(asyncio.shield(phone.resumed), STEP)
            got = await bodies(phone, set(gap))
            assert [m["body"] for m in got] == gap, "each gap message once, in order"
            # The resumed session is the same one: it still receives normally.
            bob.send_message(mto=ALICE, mbody="welcome back", mtype="chat")
            assert (await phone.next_message())["body"] == "welcome back"
    run(scenario())


@pytest.mark.parametrize("phone_state", ["offline", "hibernated"])
def test_messages_the_server_acked_survive_kill_9(kith, phone_state):
    """The phone is either logged out, or its connection died and its session waits for a
    resume (hibernated); the server confirms bob's messages, then loses power."""
    async def scenario_hibernate():
        async with device(kith, "alice", "phone", plugins=["xep_0198"]) as c:
            assert c.plugin["xep_0198"].sm_id, "stream management with resumption enabled"
            drop_connection(c)
            await asyncio.wait_for(asyncio.shield(c.gone), STEP)

    if phone_state == "hibernated":
        run(scenario_hibernate())

    async def scenario_send():
        async with device(kith, "bob", "desk", plugins=["xep_0198"]) as bob:
            sm = bob.plugin["xep_0198"]
            assert sm.enabled_in, "stream management enabled"
            acked: asyncio.Queue = asyncio.Queue()
            bob.add_event_handler("stanza_acked", acked.put_nowait)
            sent = [f"are you awake? {i}" for i in range(5)]
            for body in sent:
                bob.send_message(mto=ALICE, mbody=body, mtype="chat")
            # <r/> bypasses slixmpp's send queue: a round trip first puts it after them.
            await bob.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
            sm.request_ack()
            confirmed = []
            while len(confirmed) < len(sent):
                stanza = await asyncio.wait_for(acked.get(), STEP)
                if stanza.name == "message":
                    confirmed.append(stanza["body"])
            assert confirmed == sent
            # Acked, not yet delivered (the phone is off or unreachable): power cut.
            kith.stop(signal.SIGKILL)
            return sent

    sent = run(scenario_send())
    assert kith.proc.returncode == -signal.SIGKILL
    kith.start()

    async def scenario_receive():
        async with device(kith, "alice", "phone", plugins=["xep_0313"]) as phone:
            offline = await bodies(phone, set(sent))
            offline_bodies = [m["body"] for m in offline]
            assert len(offline_bodies) == len(set(offline_bodies)), \
                f"offline delivery repeated a message: {offline_bodies}"
            archived = await archive(phone, with_jid=BOB)
            archived_bodies = [b for _, b in archived if b in sent]
            assert len(archived_bodies) == len(set(archived_bodies)), archived
            # The client shows the union, deduplicated by stanza id (XEP-0359).
            shown: dict = {}
            for m in offline:
                shown[stanza_id(m) or m["body"]] = m["body"]
            for sid, body in archived:
                if body in sent:
                    assert shown.get(sid, body) == body, f"stanza id {sid} names two messages"
                    shown.setdefault(sid, body)
            assert sorted(shown.values()) == sorted(sent), \
                f"after dedupe: {sorted(shown.values())} (want each of {sent} once)"
            if offline and archived:
                assert {stanza_id(m) for m in offline} <= {i for i, _ in archived}, \
                    "offline copies carry the archive's stanza ids"
    run(scenario_receive())
