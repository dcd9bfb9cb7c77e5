"""Message history (XEP-0313 MAM, XEP-0359 stanza ids, XEP-0059 paging): every phone
and laptop of the household can fetch the conversations it missed, page by page."""

import asyncio
import datetime
import signal
import sqlite3
import threading
import time
import xml.etree.ElementTree as ET

from slixmpp import JID
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Collector
from slixmpp.xmlstream.matcher import MatchXPath

from conftest import DOMAIN, STEP, RawXmpp, StreamClosed, age_archive, online, run, wait_until

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"
NS_MAM = "urn:xmpp:mam:2"
NS_SID = "urn:xmpp:sid:0"


def with_mam(client):
    for p in ("xep_0059", "xep_0297", "xep_0313", "xep_0359", "xep_0334"):
        client.register_plugin(p)
    return client


async def query(client, *, with_jid=None, start=None, end=None, before_id=None,
                after_id=None, ids=None, max=None, after=None, before=None, flip=False):
    """One MAM query of the client's own archive, built with slixmpp's MAM/RSM stanzas.
    Returns (results, fin): the <result/> payloads in arrival order and the <fin/>."""
    iq = client.make_iq_set()
    q = iq["mam"]
    q["queryid"] = iq["id"]
    if with_jid is not None:
        q["with"] = JID(with_jid)
    if start is not None:
        q["start"] = start
    if end is not None:
        q["end"] = end
    if before_id is not None:
        q["before_id"] = before_id
    if after_id is not None:
        q["after_id"] = after_id
    if ids is not None:
        q["ids"] = ids
    if max is not None:
        q["rsm"]["max"] = str(max)
    if after is not None:
        q["rsm"]["after"] = after
    if before is not None:
        q["rsm"]["before"] = before if before else True
    if flip:
        q.xml.append(ET.Element(f"{{{NS_MAM}}}flip-page"))
    collector = Collector(f"mam-{iq['id']}",
                          MatchXPath(f"{{jabber:client}}message/{{{NS_MAM}}}result"))
    client.register_handler(collector)
    try:
        res = await iq.send(timeout=STEP)
    finally:
        got = collector.stop()
    results = [m["mam_result"] for m in got if m["mam_result"]["queryid"] == iq["id"]]
    return results, res["mam_fin"]


def body(result) -> str:
    return result["forwarded"]["stanza"]["body"]


def bodies(results) -> list[str]:
    return [body(r) for r in results]


def stanza_ids(msg) -> list[tuple[str, str]]:
    return [(e.get("by"), e.get("id")) for e in msg.xml.findall(f"{{{NS_SID}}}stanza-id")]


async def send_and_receive(sender, receiver, texts, to=None):
    """Send chats and wait until each arrived (so they are archived, in order)."""
    got = []
    for t in texts:
        sender.send_message(mto=to or receiver.boundjid.bare, mbody=t, mtype="chat")
        m = await receiver.next_message()
        assert m["body"] == t
        got.append(m)
    return got


def test_both_sides_are_archived_and_stamped_with_the_archive_id(kith):
    async def scenario():
        async with online(kith, "alice", "phone") as alice, \
                online(kith, "bob", "laptop") as bob:
            with_mam(alice), with_mam(bob)
            info = await bob.plugin["xep_0030"].get_info(jid=BOB, timeout=STEP)
            features = info["disco_info"]["features"]
            for f in (NS_MAM, NS_MAM + "#extended", NS_SID):
                assert f in features, f"{f} not advertised on the account"

            got = await send_and_receive(alice, bob, ["one", "two", "three"])
            live_ids = []
            for m in got:
                sids = stanza_ids(m)
                assert len(sids) == 1 and sids[0][0] == BOB, sids
                live_ids.append(sids[0][1])

            # bob's archive holds the incoming side, with the same ids.
            results, fin = await query(bob)
            assert bodies(results) == ["one", "two", "three"]
            assert [r["id"] for r in results] == live_ids
            assert fin["complete"] in (True, "true")
            assert all(r["forwarded"]["stanza"]["from"].bare == ALICE for r in results)
            assert all(r["forwarded"]["delay"]["stamp"] is not None for r in results)
            # alice's archive holds the outgoing side.
            results, _ = await query(alice, with_jid=BOB)
            assert bodies(results) == ["one", "two", "three"]
            assert all(r["forwarded"]["stanza"]["to"].bare == BOB for r in results)
    run(scenario())


def test_forged_stanza_ids_are_replaced_and_origin_id_kept(kith):
    async def scenario():
        async with online(kith, "alice", "phone") as alice, \
                online(kith, "bob", "laptop") as bob:
            with_mam(alice), with_mam(bob)
            msg = alice.make_message(mto=BOB, mbody="trust me", mtype="chat")
            for by in (BOB, DOMAIN):
                forged = ET.SubElement(msg.xml, f"{{{NS_SID}}}stanza-id")
                forged.set("by", by)
                forged.set("id", "forged")
            other = ET.SubElement(msg.xml, f"{{{NS_SID}}}stanza-id")
            other.set("by", "room@muc.elsewhere.example")
            other.set("id", "theirs")
            origin = ET.SubElement(msg.xml, f"{{{NS_SID}}}origin-id")
            origin.set("id", "origin-1")
            msg.send()
            got = await bob.next_message()
            sids = dict(stanza_ids(got))
            assert sids.get(BOB) not in (None, "forged")
            assert DOMAIN not in sids
            assert sids.get("room@muc.elsewhere.example") == "theirs"
            assert got.xml.find(f"{{{NS_SID}}}origin-id").get("id") == "origin-1"
    run(scenario())


def test_what_is_not_archived_and_what_is(kith):
    """Chat states alone and no-store hints are not kept; encrypted messages without a
    body are; store forces a receipt in."""
    async def scenario():
        async with online(kith, "alice", "phone") as alice, \
                online(kith, "bob", "laptop") as bob:
            with_mam(alice), with_mam(bob)
            alice.send_message(mto=BOB, mtype="chat", mbody=None)  # empty: nothing to keep
            st = alice.make_message(mto=BOB, mtype="chat")
            ET.SubElement(st.xml, "{http://jabber.org/protocol/chatstates}composing")
            st.send()
            ns = alice.make_message(mto=BOB, mbody="ephemeral", mtype="chat")
            ns.enable("no-store")
            ns.send()
            omemo = alice.make_message(mto=BOB, mtype="chat")
            enc = ET.SubElement(omemo.xml, "{eu.siacs.conversations.axolotl}encrypted")
            ET.SubElement(enc, "{eu.siacs.conversations.axolotl}payload").text = "AAAA"
            omemo.send()
            kept = alice.make_message(mto=BOB, mtype="chat")
            ET.SubElement(kept.xml, "{urn:xmpp:receipts}received").set("id", "r1")
            kept.enable("store")
            kept.send()
            assert (await bob.next_message())["body"] == "ephemeral", "delivered, not kept"
            await send_and_receive(alice, bob, ["marker"])
            results, _ = await query(bob)
            kinds = []
            for r in results:
                inner = r["forwarded"]["stanza"].xml
                if inner.find("{eu.siacs.conversations.axolotl}encrypted") is not None:
                    kinds.append("omemo")
                elif inner.find("{urn:xmpp:receipts}received") is not None:
                    kinds.append("stored receipt")
                else:
                    kinds.append(body(r))
            assert kinds == ["omemo", "stored receipt", "marker"], kinds
    run(scenario())


def test_paging_forward_and_backward_has_no_gaps_or_duplicates(kith):
    async def scenario():
        async with online(kith, "alice", "phone") as alice, \
                online(kith, "bob", "laptop") as bob, \
                online(kith, "carol", "tablet") as carol:
            with_mam(bob)
            texts = [f"m{i:02}" for i in range(23)]
            for i, t in enumerate(texts):
                await send_and_receive(alice, bob, [t])
                if i % 5 == 0:  # noise from another contact, filtered out by `with`
                    await send_and_receive(carol, bob, [f"carol {i}"])

            # slixmpp's own RSM iteration, both directions, 5 per page.
            forward = [body(m["mam_result"]) async for m in
                       bob.plugin["xep_0313"].iterate(with_jid=JID(ALICE), rsm={"max": 5})]
            assert forward == texts
            backward = [body(m["mam_result"]) async for m in
                        bob.plugin["xep_0313"].iterate(with_jid=JID(ALICE), rsm={"max": 5},
                                                reverse=True)]
            assert backward == list(reversed(texts))

            # By hand: pages of 10 forward, with count, first/last and complete.
            seen = []
            after = None
            for expected_complete in (False, False, True):
                results, fin = await query(bob, with_jid=ALICE, max=10, after=after)
                seen += bodies(results)
                assert fin["rsm"]["count"] == "23"
                assert fin["rsm"]["first"] == results[0]["id"]
                assert fin["rsm"]["last"] == results[-1]["id"]
                assert bool(fin["complete"]) == expected_complete, (seen, fin)
                after = fin["rsm"]["last"]
            assert seen == texts
            # Past the end: an empty, complete page.
            results, fin = await query(bob, with_jid=ALICE, max=10, after=after)
            assert results == [] and fin["complete"]

            # Backward from the end (<before/>), pages in chronological order each.
            pages = []
            results, fin = await query(bob, with_jid=ALICE, max=10, before="")
            pages.insert(0, bodies(results))
            assert not fin["complete"]
            while not fin["complete"]:
                results, fin = await query(bob, with_jid=ALICE, max=10,
                                           before=fin["rsm"]["first"])
                pages.insert(0, bodies(results))
            assert [len(p) for p in pages] == [3, 10, 10]
            assert sum(pages, []) == texts

            # flip-page: the last page, newest first.
            results, fin = await query(bob, with_jid=ALICE, max=3, before="", flip=True)
            assert bodies(results) == ["m22", "m21", "m20"]
    run(scenario())


def test_queries_by_with_time_and_ids(kith):
    async def scenario():
        async with online(kith, "alice", "phone") as alice, \
                online(kith, "bob", "laptop") as bob, \
                online(kith, "bob", "desk") as bob_desk, \
                online(kith, "carol", "tablet") as carol:
            with_mam(alice)
            await send_and_receive(alice, bob, ["to bob 1"], to=f"{BOB}/laptop")
            await send_and_receive(alice, bob_desk, ["to desk"], to=f"{BOB}/desk")
            await send_and_receive(alice, carol, ["to carol"])
            await send_and_receive(alice, bob, ["to bob 2"], to=f"{BOB}/laptop")

            all_results, _ = await query(alice)
            assert bodies(all_results) == ["to bob 1", "to desk", "to carol", "to bob 2"]
            ids = [r["id"] for r in all_results]
            stamps = [r["forwarded"]["delay"]["stamp"] for r in all_results]

            results, _ = await query(alice, with_jid=BOB)
            assert bodies(results) == ["to bob 1", "to desk", "to bob 2"]
            results, _ = await query(alice, with_jid=f"{BOB}/desk")
            assert bodies(results) == ["to desk"], "a full JID matches that resource only"
            results, _ = await query(alice, with_jid=CAROL)
            assert bodies(results) == ["to carol"]

            results, _ = await query(alice, start=stamps[1], end=stamps[2])
            assert bodies(results) == ["to desk", "to carol"]
            results, _ = await query(alice, start=stamps[3] + datetime.timedelta(seconds=5))
            assert results == []

            results, _ = await query(alice, after_id=ids[0], before_id=ids[3])
            assert bodies(results) == ["to desk", "to carol"]
            results, _ = await query(alice, with_jid=BOB, after_id=ids[0])
            assert bodies(results) == ["to desk", "to bob 2"]
            results, fin = await query(alice, ids=[ids[3], ids[1]])
            assert bodies(results) == ["to desk", "to bob 2"] and fin["complete"]
    run(scenario())


def test_bad_queries_get_clear_errors_and_max_is_capped(kith):
    async def scenario():
        async with online(kith, "alice", "phone") as alice, \
                online(kith, "bob", "laptop") as bob:
            with_mam(alice)
            await send_and_receive(alice, bob, ["hello"])

            async def error_of(**kw):
                try:
                    await query(alice, **kw)
                except IqError as e:
                    return e.iq["error"]["condition"]
                raise AssertionError(f"query {kw} succeeded")

            assert await error_of(after_id="ffffff") == "item-not-found"
            assert await error_of(before_id="not-an-id") == "item-not-found"
            assert await error_of(ids=["abcdef"]) == "item-not-found"
            assert await error_of(after="123456") == "item-not-found"
            assert await error_of(start="the day before yesterday") == "bad-request"
            assert await error_of(max="lots") == "bad-request"

            # An unknown form field.
            iq = alice.make_iq_set()
            iq["mam"]["queryid"] = "bad-form"
            iq["mam"].set_custom_field("colour", "red")
            try:
                await iq.send(timeout=STEP)
                raise AssertionError("unknown field accepted")
            except IqError as e:
                assert e.iq["error"]["condition"] == "bad-request"
                assert "colour" in e.iq["error"]["text"]

            # The fields a client may use.
            form = await alice.plugin["xep_0313"].get_fields(timeout=STEP)
            fields = set(form.get_fields())
            assert {"FORM_TYPE", "with", "start", "end", "before-id", "after-id",
                    "ids"} <= fields

            # Another account's archive is not ours to read.
            iq = alice.make_iq_set(ito=BOB)
            iq.enable("mam")
            try:
                await iq.send(timeout=STEP)
                raise AssertionError("read bob's archive")
            except IqError as e:
                assert e.iq["error"]["condition"] in ("service-unavailable", "forbidden")
    run(scenario())


def test_a_huge_max_is_capped_at_250(kith):
    async def scenario():
        async with online(kith, "alice", "phone") as alice, \
                online(kith, "bob", "laptop") as bob:
            with_mam(bob)
            for i in range(260):
                alice.send_message(mto=BOB, mbody=f"n{i}", mtype="chat")
            # One round trip after the burst: every message has been handled.
            await alice.plugin["xep_0199"].ping(BOB, timeout=STEP)
            results, fin = await query(bob, max=100000)
            assert len(results) == 250
            assert not fin["complete"] and fin["rsm"]["count"] == "260"
            results, fin = await query(bob, max=100000, after=fin["rsm"]["last"])
            assert len(results) == 10 and fin["complete"]
    run(scenario())


def test_offline_phone_catches_up_with_the_same_ids(kith):
    """bob's phone is off; alice writes; the phone gets the offline messages and the
    archive, and they carry the same stanza ids, so it can dedupe."""
    async def scenario():
        async with online(kith, "alice", "phone") as alice:
            for t in ("are you there?", "call me"):
                alice.send_message(mto=BOB, mbody=t, mtype="chat")
            await alice.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
        async with online(kith, "bob", "phone") as bob:
            with_mam(bob)
            offline = [await bob.next_message(), await bob.next_message()]
            assert [m["body"] for m in offline] == ["are you there?", "call me"]
            offline_ids = [dict(stanza_ids(m))[BOB] for m in offline]
            results, fin = await query(bob, with_jid=ALICE)
            assert bodies(results) == ["are you there?", "call me"]
            assert [r["id"] for r in results] == offline_ids
            meta = await bob.plugin["xep_0313"].get_archive_metadata(timeout=STEP)
            assert meta["mam_metadata"]["start"]["id"] == offline_ids[0]
            assert meta["mam_metadata"]["end"]["id"] == offline_ids[1]
    run(scenario())


async def set_prefs(client, default, always=(), never=()):
    iq = client.make_iq_set()
    prefs = ET.SubElement(iq.xml, f"{{{NS_MAM}}}prefs", default=default)
    for name, jids in (("always", always), ("never", never)):
        lst = ET.SubElement(prefs, f"{{{NS_MAM}}}{name}")
        for j in jids:
            ET.SubElement(lst, f"{{{NS_MAM}}}jid").text = j
    res = await iq.send(timeout=STEP)
    return res.xml.find(f"{{{NS_MAM}}}prefs")


def test_preferences_never_always_and_roster(kith):
    async def scenario():
        async with online(kith, "alice", "phone") as alice, \
                online(kith, "bob", "laptop") as bob, \
                online(kith, "carol", "tablet") as carol:
            with_mam(bob)
            # bob keeps nothing by default, but always keeps carol.
            stored = await set_prefs(bob, "never", always=[CAROL])
            assert stored.get("default") == "never"
            assert [j.text for j in stored.findall(f"{{{NS_MAM}}}always/{{{NS_MAM}}}jid")] \
                == [CAROL]
            await send_and_receive(alice, bob, ["not kept"])
            await send_and_receive(carol, bob, ["kept"])
            results, _ = await query(bob)
            assert bodies(results) == ["kept"]
            # alice's own archive still has her side: preferences are per account.
            with_mam(alice)
            results, _ = await query(alice)
            assert bodies(results) == ["not kept"]

            # Always by default, but never alice.
            await set_prefs(bob, "always", never=[ALICE])
            await send_and_receive(alice, bob, ["still not kept"])
            await send_and_receive(carol, bob, ["kept too"])
            results, _ = await query(bob)
            assert bodies(results) == ["kept", "kept too"]

            # Roster: only contacts on bob's roster.
            await set_prefs(bob, "roster")
            bob.update_roster(CAROL, name="Carol")
            await bob.next_roster_push()
            await send_and_receive(alice, bob, ["from a stranger"])
            await send_and_receive(carol, bob, ["from a contact"])
            results, _ = await query(bob)
            assert bodies(results)[-1] == "from a contact"
            assert "from a stranger" not in bodies(results)

            # The stored preferences read back; a bad default is refused.
            iq = bob.make_iq_get()
            ET.SubElement(iq.xml, f"{{{NS_MAM}}}prefs")
            res = await iq.send(timeout=STEP)
            assert res.xml.find(f"{{{NS_MAM}}}prefs").get("default") == "roster"
            try:
                await set_prefs(bob, "sometimes")
                raise AssertionError("bad default accepted")
            except IqError as e:
                assert e.iq["error"]["condition"] == "bad-request"
    run(scenario())


def test_history_survives_a_restart_and_a_kill(kith):
    async def scenario(texts):
        async with online(kith, "alice", "phone") as alice, \
                online(kith, "bob", "laptop") as bob:
            await send_and_receive(alice, bob, texts)
            # The archive commits shortly after delivery, off the sender's path: a
            # message is certainly on disk once a stream management ack covered it
            # (test_an_acked_message_to_an_online_account_is_in_its_history_after_kill_9)
            # or an archive query saw it.
            results, _ = await query(with_mam(bob))
            assert bodies(results)[-len(texts):] == texts

    async def check(expected):
        async with online(kith, "bob", "laptop") as bob:
            with_mam(bob)
            results, _ = await query(bob)
            assert bodies(results) == expected

    run(scenario(["before restart"]))
    kith.stop()
    kith.start()
    run(scenario(["before kill"]))
    kith.stop(sig=9)
    kith.start()
    run(check(["before restart", "before kill"]))


def test_an_acked_message_to_an_online_account_is_in_its_history_after_kill_9(kith, test_ca):
    """bob is online; alice's laptop (with stream management) writes him a burst of 200
    messages and asks for an ack; the moment the server acks them it is killed with
    SIGKILL. After a restart all 200 are in bob's history (and alice's), in order: the
    server acked nothing before its archive rows were on disk."""
    ns_sm = "urn:xmpp:sm:3"
    ctx = test_ca.client_context()
    bob = RawXmpp(kith.c2s_port)
    alice = RawXmpp(kith.c2s_port)
    sent = [f"k{i}" for i in range(200)]
    try:
        bob.login(ctx, "bob", "laptop")
        bob.send("<presence/>")
        alice.login(ctx, "alice", "laptop")
        alice.send(f"<enable xmlns='{ns_sm}'/>")
        alice.expect(f"{{{ns_sm}}}enabled")
        alice.send("".join(f"<message to='{BOB}' type='chat'><body>{b}</body></message>"
                           for b in sent) + f"<r xmlns='{ns_sm}'/>")
        while True:
            el = alice.element(STEP)
            if el.tag == f"{{{ns_sm}}}a":
                break
        assert int(el.get("h")) == len(sent)
        kith.stop(signal.SIGKILL)
    finally:
        alice.close()
        bob.close()
    kith.start()

    async def check(user):
        async with online(kith, user, "phone") as c:
            results, fin = await query(with_mam(c), max=250)
            assert bodies(results) == sent
            assert fin["complete"]
    run(check("bob"))
    run(check("alice"))


def test_a_kill_9_under_load_loses_no_acknowledged_message(kith, test_ca):
    """The throughput run, cut by a power failure: six pairs, each sender streaming
    messages to its partner's full or bare JID with stream management (an ack request
    after every 25), each receiver reading as fast as it can. After two seconds of this
    the server gets SIGKILL. After a restart every message a sender had been acked for is
    in the sender's and the receiver's history; each history holds a prefix of what was
    sent: in order, without a gap or a duplicate (what was delivered but not yet on disk
    at the kill may be missing from the end, never from the middle)."""
    ns_sm = "urn:xmpp:sm:3"
    pairs = 6
    ctx = test_ca.client_context()
    names = [f"load{i}" for i in range(2 * pairs)]
    for name in names:
        kith.add_user(name)
    receivers_ready = threading.Barrier(pairs + 1, timeout=STEP)
    start = threading.Event()
    acked: dict[str, int] = {}
    received: dict[str, int] = {}
    failures: list[str] = []

    def receiver(name):
        count = 0
        try:
            c = RawXmpp(kith.c2s_port)
            c.login(ctx, name, "load")
            c.send("<presence/>")
            receivers_ready.wait()
            while True:
                el = c.element(STEP)
                if el.tag == "{jabber:client}message" and el.find("{jabber:client}body") is not None:
                    count += 1
        except (StreamClosed, TimeoutError, OSError):
            pass
        except Exception as e:  # noqa: BLE001 - reported by the test below
            failures.append(f"{name}: {e!r}")
        received[name] = count

    def sender(name, to):
        try:
            c = RawXmpp(kith.c2s_port)
            c.login(ctx, name, "load")
            c.send(f"<enable xmlns='{ns_sm}'/>")
            c.expect(f"{{{ns_sm}}}enabled")
            start.wait(STEP)
            n = 0
            while n < 200_000:
                c.send("".join(f"<message to='{to}' type='chat'><body>{name}-{n + i}</body>"
                               "</message>" for i in range(25)) + f"<r xmlns='{ns_sm}'/>")
                n += 25
                while True:
                    el = c.element(STEP)
                    if el.tag == f"{{{ns_sm}}}a":
                        acked[name] = int(el.get("h"))
                        break
        except (StreamClosed, TimeoutError, OSError):
            pass
        except Exception as e:  # noqa: BLE001 - reported by the test below
            failures.append(f"{name}: {e!r}")

    threads = []
    for p in range(pairs):
        s, r = names[2 * p], names[2 * p + 1]
        to = f"{r}@{DOMAIN}/load" if p % 2 else f"{r}@{DOMAIN}"
        threads.append(threading.Thread(target=receiver, args=(r,), daemon=True))
        threads.append(threading.Thread(target=sender, args=(s, to), daemon=True))
    for t in threads:
        t.start()
    receivers_ready.wait()
    start.set()
    time.sleep(2)
    kith.stop(signal.SIGKILL)
    for t in threads:
        t.join(STEP * 2)
    assert not failures, failures
    assert all(t.is_alive() is False for t in threads)
    assert sum(acked.values()) >= 500, f"too little load to mean anything: {acked}"

    kith.start()
    kith.stop()  # a clean start after the kill, then a clean stop: the files are settled
    db = sqlite3.connect(kith.data_dir / "kith.db")
    try:
        for p in range(pairs):
            s, r = names[2 * p], names[2 * p + 1]
            for owner, other in ((s, r), (r, s)):
                rows = db.execute(
                    "SELECT stanza FROM archive"
                    " WHERE owner = (SELECT id FROM archive_jids WHERE jid = ?)"
                    " AND with_jid = (SELECT id FROM archive_jids WHERE jid = ?) ORDER BY id",
                    (owner, f"{other}@{DOMAIN}")).fetchall()
                got = [ET.fromstring(x).findtext("{jabber:client}body") for (x,) in rows]
                assert got == [f"{s}-{i}" for i in range(len(got))], \
                    f"{owner}'s history with {other} is not a prefix of what was sent"
                assert len(got) >= acked.get(s, 0), \
                    f"{s} was acked for {acked.get(s)} messages, {owner}'s history holds {len(got)}"
    finally:
        db.close()


def test_retention_prunes_old_history(kith):
    """bob keeps 30 days of history: older messages go, newer stay. Messages are aged
    by rewriting their stored time while the server is stopped."""
    async def scenario():
        async with online(kith, "alice", "phone") as alice, \
                online(kith, "bob", "laptop") as bob:
            await send_and_receive(alice, bob, ["old 1", "old 2", "new"])

    run(scenario())
    out = kith.cli("user", "retention", BOB, "30").stdout
    assert "30 days" in out
    kith.stop()
    age_archive(kith.data_dir / "kith.db", 40 * 86400 * 1_000_000, "%old %")
    out = kith.cli("history", "prune").stdout
    assert "deleted 2 " in out, out  # bob's two old messages; alice keeps hers (no limit)
    kith.start()

    async def check():
        async with online(kith, "bob", "laptop") as bob, \
                online(kith, "alice", "phone") as alice:
            with_mam(bob), with_mam(alice)
            results, _ = await query(bob)
            assert bodies(results) == ["new"]
            results, _ = await query(alice)
            assert bodies(results) == ["old 1", "old 2", "new"]
    run(check())
    bad = kith.cli("user", "retention", BOB, "soon", check=False)
    assert bad.returncode != 0 and "soon" in bad.stderr


def test_the_background_pruner_applies_the_server_default(kith_factory):
    """`[archive] retention_days = 7` for everyone: at start-up the pruner deletes what
    is older, without any command."""
    kith = kith_factory()
    for user in ("alice", "bob"):
        kith.add_user(user)
    kith.start()

    async def scenario():
        async with online(kith, "alice", "phone") as alice, \
                online(kith, "bob", "laptop") as bob:
            await send_and_receive(alice, bob, ["old", "recent"])

    run(scenario())
    kith.stop()
    age_archive(kith.data_dir / "kith.db", 8 * 86400 * 1_000_000, "%>old<%")
    # The fixture writes [limits] and [auth]; history settings go after them.
    kith.config.write_text(kith.config.read_text()
                           + "\n[archive]\nretention_days = 7\nprune_interval_secs = 3600\n")
    kith.start()

    def remaining():
        con = sqlite3.connect(kith.data_dir / "kith.db", timeout=STEP)
        try:
            return con.execute("SELECT COUNT(*) FROM archive").fetchone()[0]
        finally:
            con.close()

    wait_until(lambda: remaining() == 2, STEP, "the start-up pruning round")

    async def check():
        async with online(kith, "bob", "laptop") as bob:
            with_mam(bob)
            results, _ = await query(bob)
            assert bodies(results) == ["recent"]
    run(check())


def test_a_page_of_large_messages_is_cut_to_fit_and_continues(kith):
    """Five 200 KB messages: a page stops before 512 KiB (two messages), is not
    complete, and the next pages carry on without a gap."""
    async def scenario():
        async with online(kith, "alice", "phone") as alice, \
                online(kith, "bob", "laptop") as bob:
            with_mam(bob)
            texts = [f"{i}" + "x" * 200_000 for i in range(5)]
            await send_and_receive(alice, bob, texts)
            seen, after, pages = [], None, 0
            while True:
                results, fin = await query(bob, max=5, after=after)
                pages += 1
                assert 1 <= len(results) <= 2
                seen += bodies(results)
                if fin["complete"]:
                    break
                after = fin["rsm"]["last"]
            assert seen == texts and pages == 3
    run(scenario())
