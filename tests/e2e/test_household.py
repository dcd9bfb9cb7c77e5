"""A household's day: rosters, presence, messages, offline delivery, phones and laptops."""

import asyncio
import contextlib

from conftest import DOMAIN, STEP, RawXmpp, exchange, online, run

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


def roster_items(iq) -> dict:
    return {str(jid): item for jid, item in iq["roster"]["items"].items()}


def roster_item(iq, jid):
    items = roster_items(iq)
    assert jid in items, f"{jid} not in roster push {list(items)}"
    return items[jid]


def is_push_for(jid, subscription, ask=None):
    def match(iq):
        items = roster_items(iq)
        if jid not in items:
            return False
        item = items[jid]
        return item["subscription"] == subscription and (ask is None or item["ask"] == ask)
    return match


def test_alice_and_bob_become_contacts(kith):
    """The full RFC 6121 §3 handshake, both directions, with roster pushes at each step,
    presence flowing once subscribed, and unavailable presence when bob leaves."""
    async def scenario():
        async with online(kith, "alice", "phone") as alice, online(kith, "bob", "laptop") as bob:
            # alice asks to see bob's presence.
            alice.send_presence_subscription(pto=BOB, ptype="subscribe")
            await alice.next_roster_push(is_push_for(BOB, "none", "subscribe"))
            req = await bob.next_presence(lambda p: p["type"] == "subscribe")
            assert req["from"].bare == ALICE, "subscription requests come from the bare JID"
            # bob approves.
            bob.send_presence_subscription(pto=ALICE, ptype="subscribed")
            await bob.next_roster_push(is_push_for(ALICE, "from"))
            await alice.next_roster_push(is_push_for(BOB, "to"))
            await alice.next_presence(lambda p: p["type"] == "subscribed"
                                      and p["from"].bare == BOB)
            # … and alice now gets bob's current presence.
            avail = await alice.next_presence(lambda p: p["type"] == "available"
                                              and p["from"].bare == BOB)
            assert avail["from"].resource == "laptop"

            # bob asks back, alice approves: both.
            bob.send_presence_subscription(pto=ALICE, ptype="subscribe")
            await alice.next_presence(lambda p: p["type"] == "subscribe" and p["from"].bare == BOB)
            alice.send_presence_subscription(pto=BOB, ptype="subscribed")
            await alice.next_roster_push(is_push_for(BOB, "both"))
            await bob.next_roster_push(is_push_for(ALICE, "both"))
            await bob.next_presence(lambda p: p["type"] == "available" and p["from"].bare == ALICE)

            # What the clients learnt from the pushes is what the server stored.
            for c, other in ((alice, BOB), (bob, ALICE)):
                r = await c.get_roster(timeout=STEP)
                if roster_items(r):  # an empty result means "your version is current"
                    assert roster_item(r, other)["subscription"] == "both"
                assert c.client_roster[other]["subscription"] == "both"

            # bob's laptop goes away: alice sees it.
            await bob.close()
            gone = await alice.next_presence(lambda p: p["type"] == "unavailable"
                                             and p["from"].bare == BOB)
            assert gone["from"].resource == "laptop"
    run(scenario())


def test_bob_declines_and_alice_cancels(kith):
    async def scenario():
        async with online(kith, "alice") as alice, online(kith, "bob") as bob:
            alice.send_presence_subscription(pto=BOB, ptype="subscribe")
            await bob.next_presence(lambda p: p["type"] == "subscribe")
            bob.send_presence_subscription(pto=ALICE, ptype="unsubscribed")
            await alice.next_presence(lambda p: p["type"] == "unsubscribed"
                                      and p["from"].bare == BOB)
            push = await alice.next_roster_push(lambda iq: BOB in roster_items(iq)
                                                and not roster_items(iq)[BOB]["ask"])
            assert roster_item(push, BOB)["subscription"] == "none"
            # Removing the contact pushes subscription='remove'.
            alice.del_roster_item(BOB)
            await alice.next_roster_push(is_push_for(BOB, "remove"))
            assert BOB not in alice.client_roster
    run(scenario())


def test_messages_flow_both_ways_with_from_stamped(kith, test_ca):
    async def scenario():
        async with online(kith, "alice", "phone") as alice, online(kith, "bob", "laptop") as bob:
            for i in range(3):
                await exchange(alice, bob, f"alice says {i}")
                await exchange(bob, alice, f"bob says {i}")
            # Escaping and non-ASCII survive the trip untouched.
            await exchange(alice, bob, "5 < 6 & \"quotes\" 'apos' ]]> 🍕 ünïcödé 漢字")
            # A client lying about `from` is corrected: the server stamps the real full JID.
            raw = RawXmpp(kith.c2s_port)
            liar = await asyncio.to_thread(raw.login, test_ca.client_context(), "carol", "x")
            raw.send(f"<message to='{ALICE}' from='bob@{DOMAIN}/laptop' type='chat'>"
                     "<body>it is me, bob</body></message>")
            msg = await alice.next_message()
            assert msg["body"] == "it is me, bob"
            assert str(msg["from"]) == liar, f"forged from not replaced: {msg['from']}"
            raw.close()
    run(scenario())


def test_message_to_unknown_user_bounces_service_unavailable(kith):
    """RFC 6121 §8.5.1 lets a server drop it or bounce it; issue 2 asks for the error."""
    async def scenario():
        async with online(kith, "alice") as alice:
            alice.send_message(mto=f"nobody@{DOMAIN}", mbody="hello?", mtype="chat")
            err = await alice.next_message(body_only=False)
            assert err["type"] == "error", err
            assert err["error"]["condition"] == "service-unavailable", err
            assert err["from"].bare == f"nobody@{DOMAIN}"
    run(scenario())


def test_bob_gets_what_he_missed_when_his_phone_comes_back(kith):
    """XEP-0160: messages to an offline user are stored, delivered on the next available
    presence (not before), in order, exactly once."""
    async def scenario():
        bodies = [f"while you were out {i}" for i in range(5)]
        async with online(kith, "alice") as alice:
            for b in bodies:
                alice.send_message(mto=BOB, mbody=b, mtype="chat")
            # A round-trip so that every message reached the server before bob logs in.
            await alice.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
        async with online(kith, "bob", "phone", presence=False) as bob:
            await bob.expect_no_message(1.0)  # no presence yet: nothing delivered
            bob.send_presence()
            got = [(await bob.next_message())["body"] for _ in bodies]
            assert got == bodies
            await bob.expect_no_message(0.5)  # and nothing more
        async with online(kith, "bob", "phone") as bob:
            await bob.expect_no_message(1.0)  # delivered once, not again
    run(scenario())


def test_offline_storage_is_bounded(kith_factory):
    k = kith_factory(limits={"offline_max": 3})
    for u in ("alice", "bob"):
        k.add_user(u)
    k.start()

    async def scenario():
        async with online(k, "alice") as alice:
            for i in range(5):
                alice.send_message(mto=BOB, mbody=f"m{i}", mtype="chat")
            await alice.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
            # Past the bound the sender learns the message was not stored.
            errors = []
            while True:
                try:
                    m = await alice.next_message(2.0, body_only=False)
                except asyncio.TimeoutError:
                    break
                if m["type"] == "error":
                    errors.append(m)
            assert len(errors) == 2, f"expected 2 bounces past offline_max=3, got {len(errors)}"
        async with online(k, "bob") as bob:
            got = [(await bob.next_message())["body"] for _ in range(3)]
            assert got == ["m0", "m1", "m2"]
            await bob.expect_no_message(1.0)
    run(scenario())


def test_bare_jid_messages_go_to_the_highest_priority_resource(kith):
    """RFC 6121 §8.5.2.1.1: alice's phone (priority 5) gets bob's message, her laptop
    (priority 1) doesn't; when the laptop raises its priority it gets the next one; full-JID
    messages always go to that resource alone."""
    async def scenario():
        async with online(kith, "alice", "phone", priority=5) as phone, \
                online(kith, "alice", "laptop", priority=1) as laptop, \
                online(kith, "bob") as bob:
            bob.send_message(mto=ALICE, mbody="to the phone", mtype="chat")
            assert (await phone.next_message())["body"] == "to the phone"
            await laptop.expect_no_message(1.0)

            laptop.send_presence(ppriority=10)
            await phone.next_presence(lambda p: p["from"] == laptop.boundjid
                                      and p["priority"] == 10)
            bob.send_message(mto=ALICE, mbody="to the laptop", mtype="chat")
            assert (await laptop.next_message())["body"] == "to the laptop"
            await phone.expect_no_message(1.0)

            bob.send_message(mto=phone.boundjid, mbody="full jid", mtype="chat")
            assert (await phone.next_message())["body"] == "full jid"
            await laptop.expect_no_message(1.0)
    run(scenario())


def test_negative_priority_resource_gets_no_bare_jid_messages(kith):
    async def scenario():
        async with online(kith, "alice", "bot", priority=-1) as bot, online(kith, "bob") as bob:
            bob.send_message(mto=ALICE, mbody="stored, not sent to a -1 resource", mtype="chat")
            await bot.expect_no_message(1.5)
            bot.send_message(mto=bob.boundjid, mbody="but I can talk", mtype="chat")
            assert (await bob.next_message())["body"] == "but I can talk"
        async with online(kith, "alice", "phone") as phone:
            msg = await phone.next_message()
            assert msg["body"] == "stored, not sent to a -1 resource"
    run(scenario())


def test_same_resource_twice_newer_login_wins(kith):
    async def scenario():
        async with online(kith, "alice", "phone") as old, online(kith, "bob") as bob:
            async with online(kith, "alice", "phone") as new:
                err = await asyncio.wait_for(old.stream_errors.get(), STEP)
                assert err["condition"] == "conflict", err
                await asyncio.wait_for(asyncio.shield(old.gone), STEP)
                assert new.boundjid.full == f"{ALICE}/phone"
                await exchange(bob, new)
                await exchange(new, bob)
    run(scenario())


def test_directed_presence_reaches_a_non_contact(kith):
    async def scenario():
        async with online(kith, "alice") as alice, online(kith, "bob") as bob:
            alice.send_presence(pto=bob.boundjid, pstatus="knock knock")
            p = await bob.next_presence(lambda p: p["from"] == alice.boundjid)
            assert p["status"] == "knock knock"
    run(scenario())


def test_iq_to_a_full_jid_is_routed_and_answered(kith):
    async def scenario():
        async with online(kith, "alice") as alice, online(kith, "bob") as bob:
            rtt = await alice.plugin["xep_0199"].ping(bob.boundjid, timeout=STEP)
            assert rtt >= 0
    run(scenario())



def test_roster_versioning(kith, test_ca):
    """XEP-0237: a client with the current version gets an empty result; a change bumps it."""
    raw = RawXmpp(kith.c2s_port)
    raw.starttls(test_ca.client_context())
    raw.mechanisms()
    assert raw.auth_plain("alice").tag.endswith("success")
    raw.open_stream()
    feats = raw.features()
    assert feats.find("{urn:xmpp:features:rosterver}ver") is not None, \
        "roster versioning (urn:xmpp:features:rosterver) not advertised"
    raw.send("<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
             "<resource>desk</resource></bind></iq>")
    assert raw.expect("{jabber:client}iq").get("type") == "result"
    q = "<query xmlns='jabber:iq:roster' ver='{}'/>"
    raw.send(f"<iq type='get' id='r1'>{q.format('')}</iq>")
    iq = raw.expect("{jabber:client}iq")
    ver1 = iq.find("{jabber:iq:roster}query").get("ver")
    assert ver1 is not None, "roster result without a version"
    raw.send(f"<iq type='get' id='r2'>{q.format(ver1)}</iq>")
    iq = raw.expect("{jabber:client}iq")
    assert iq.get("type") == "result"
    query = iq.find("{jabber:iq:roster}query")
    assert query is None or len(query) == 0, "current version must not resend the roster"
    raw.send(f"<iq type='set' id='r3'><query xmlns='jabber:iq:roster'>"
             f"<item jid='{BOB}' name='Bob'/></query></iq>")
    push = result = None
    for _ in range(4):
        el = raw.expect("{jabber:client}iq")
        if el.get("type") == "set":
            push = el
        elif el.get("id") == "r3":
            result = el
        if push is not None and result is not None:
            break
    assert result is not None and result.get("type") == "result"
    assert push is not None, "no roster push for the change"
    ver2 = push.find("{jabber:iq:roster}query").get("ver")
    assert ver2 and ver2 != ver1, (ver1, ver2)
    raw.close()


def test_message_to_a_connected_but_not_yet_available_user_waits_for_his_presence(kith):
    """RFC 6121 §8.5.2.2: bob's phone is bound but has sent no presence yet; alice's message
    to his bare JID is kept (offline storage) and handed over with his initial presence."""
    async def scenario():
        async with online(kith, "bob", "phone", presence=False) as bob, \
                online(kith, "alice") as alice:
            alice.send_message(mto=BOB, mbody="are you there?", mtype="chat")
            await alice.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
            bob.send_presence()
            assert (await bob.next_message())["body"] == "are you there?"
    run(scenario())


def test_a_message_racing_the_initial_presence_is_not_lost(kith):
    """alice writes at the very moment bob's phone announces itself: whichever the server
    sees first, the message must reach bob (live, or from offline storage on that presence)."""
    async def scenario():
        async with online(kith, "alice") as alice:
            for i in range(15):
                async with online(kith, "bob", f"phone{i}", presence=False) as bob:
                    bob.send_presence()
                    alice.send_message(mto=BOB, mbody=f"race {i}", mtype="chat")
                    try:
                        msg = await bob.next_message(5.0)
                    except asyncio.TimeoutError:
                        msg = None
                if msg is None:  # where did it go? (diagnosis for the failure message)
                    async with online(kith, "bob", "check") as again:
                        try:
                            late = (await again.next_message(3.0))["body"]
                        except asyncio.TimeoutError:
                            late = None
                    raise AssertionError(
                        f"race {i}: not delivered with bob's initial presence; "
                        + (f"it sat in offline storage until the next presence ({late!r})"
                           if late else "and it is gone (not in offline storage either)"))
                assert msg["body"] == f"race {i}"
    run(scenario(), timeout=120)


async def befriend(alice, bob):
    """Mutual subscription between two online clients, the long way round."""
    a, b = alice.boundjid.bare, bob.boundjid.bare
    alice.send_presence_subscription(pto=b, ptype="subscribe")
    await bob.next_presence(lambda p: p["type"] == "subscribe" and p["from"].bare == a)
    bob.send_presence_subscription(pto=a, ptype="subscribed")
    bob.send_presence_subscription(pto=a, ptype="subscribe")
    await alice.next_presence(lambda p: p["type"] == "subscribe" and p["from"].bare == b)
    alice.send_presence_subscription(pto=b, ptype="subscribed")
    await alice.next_roster_push(is_push_for(b, "both"))
    await bob.next_roster_push(is_push_for(a, "both"))


def test_pre_approved_subscription_needs_no_second_step(kith, test_ca):
    """RFC 6121 §3.4: bob pre-approves alice; her later request is approved by the server."""
    raw = RawXmpp(kith.c2s_port)
    raw.starttls(test_ca.client_context())
    raw.mechanisms()
    assert raw.auth_plain("bob").tag.endswith("success")
    raw.open_stream()
    feats = raw.features()
    assert feats.find("{urn:xmpp:features:pre-approval}sub") is not None, \
        "pre-approval (urn:xmpp:features:pre-approval) not advertised"
    raw.close()

    async def scenario():
        async with online(kith, "bob") as bob:
            bob.send_presence_subscription(pto=ALICE, ptype="subscribed")
            push = await bob.next_roster_push(lambda iq: ALICE in roster_items(iq))
            assert roster_item(push, ALICE)["approved"] in ("true", "1", True), push
            async with online(kith, "alice") as alice:
                alice.send_presence_subscription(pto=BOB, ptype="subscribe")
                await alice.next_roster_push(is_push_for(BOB, "to"))
                await alice.next_presence(lambda p: p["type"] == "subscribed"
                                          and p["from"].bare == BOB)
                await bob.next_roster_push(is_push_for(ALICE, "from"))
    run(scenario())


def test_cancelling_and_unsubscribing(kith):
    """RFC 6121 §3.2-3.3: bob cancels alice's subscription, alice unsubscribes from bob."""
    async def scenario():
        async with online(kith, "alice") as alice, online(kith, "bob") as bob:
            await befriend(alice, bob)
            # bob stops alice seeing him: she is told, her roster says 'from', and she gets
            # his unavailable presence.
            bob.send_presence_subscription(pto=ALICE, ptype="unsubscribed")
            await alice.next_roster_push(is_push_for(BOB, "from"))
            await bob.next_roster_push(is_push_for(ALICE, "to"))
            await alice.next_presence(lambda p: p["type"] == "unsubscribed"
                                      and p["from"].bare == BOB)
            await alice.next_presence(lambda p: p["type"] == "unavailable"
                                      and p["from"].bare == BOB)
            # alice stops seeing... she no longer sees bob; now she drops his subscription
            # to her as well: both 'none'.
            alice.send_presence_subscription(pto=BOB, ptype="unsubscribed")
            await alice.next_roster_push(is_push_for(BOB, "none"))
            await bob.next_roster_push(is_push_for(ALICE, "none"))
            await bob.next_presence(lambda p: p["type"] == "unavailable"
                                    and p["from"].bare == ALICE)
    run(scenario())


def test_alice_sees_who_is_online_when_she_comes_online(kith):
    """RFC 6121 §4.2: on alice's initial presence the server probes her contacts and hands
    her their current presence; they see her come online."""
    async def scenario():
        async with online(kith, "alice", "phone") as alice, online(kith, "bob", "laptop") as bob:
            await befriend(alice, bob)
        async with online(kith, "bob", "laptop") as bob:
            bob.send_presence(pstatus="cooking")
            await bob.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
            async with online(kith, "alice", "tablet") as alice:
                p = await alice.next_presence(lambda p: p["from"] == bob.boundjid
                                              and p["type"] == "available")
                assert p["status"] == "cooking"
                seen = await bob.next_presence(lambda p: p["from"] == alice.boundjid)
                assert seen["type"] == "available"
    run(scenario())


def test_directed_presence_target_learns_when_alice_leaves(kith):
    """RFC 6121 §4.6: someone alice sent directed presence to gets her unavailable too."""
    async def scenario():
        async with online(kith, "bob") as bob:
            async with online(kith, "alice") as alice:
                alice.send_presence(pto=bob.boundjid)
                await bob.next_presence(lambda p: p["from"] == alice.boundjid)
                alice_jid = alice.boundjid
            gone = await bob.next_presence(lambda p: p["from"] == alice_jid
                                           and p["type"] == "unavailable")
            assert gone["from"] == alice_jid
    run(scenario())


def test_message_to_a_vanished_resource_falls_back_to_the_bare_jid(kith):
    """RFC 6121 §8.5.3.2.1: a chat to alice/laptop when only alice/phone is online reaches
    the phone; an IQ to the vanished resource gets service-unavailable."""
    async def scenario():
        async with online(kith, "alice", "phone") as phone, online(kith, "bob") as bob:
            bob.send_message(mto=f"{ALICE}/laptop", mbody="on your laptop?", mtype="chat")
            assert (await phone.next_message())["body"] == "on your laptop?"
            from slixmpp.exceptions import IqError
            try:
                await bob.plugin["xep_0199"].send_ping(f"{ALICE}/laptop", timeout=STEP)
            except IqError as e:
                assert e.iq["error"]["condition"] == "service-unavailable", e.iq
            else:
                raise AssertionError("ping to an absent resource was answered")
    run(scenario())


def test_message_to_another_domain_without_federation_bounces(kith):
    """s2s is off in this config: a message for another server comes back as an error
    (remote-server-not-found, or service-unavailable), it does not vanish."""
    async def scenario():
        async with online(kith, "alice") as alice:
            alice.send_message(mto="friend@elsewhere.example", mbody="hi", mtype="chat")
            err = await alice.next_message(body_only=False)
            assert err["type"] == "error", err
            assert err["error"]["condition"] in ("remote-server-not-found",
                                                 "service-unavailable"), err
    run(scenario())


def test_two_people_subscribing_to_each_other_at_once_both_end_up_with_both(kith):
    """Both sides ask at the same moment and both clients approve automatically: the
    server updates the same two roster items from two sessions at once, and neither
    change may be lost (a lost update leaves one side at `to` instead of `both`), and
    neither may wait for the other: each side's server work sends its presence to the
    other at the same moment, which once deadlocked two sessions' locks and froze the
    server (about one round in four). Four rounds of eight pairs."""
    pairs = [(f"s{r}a{i}", f"s{r}b{i}") for r in range(4) for i in range(8)]
    for a, b in pairs:
        kith.add_user(a)
        kith.add_user(b)

    async def one_pair(a, b):
        async with online(kith, a, "phone") as x, online(kith, b, "phone") as y:
            for c in (x, y):
                c.roster.auto_authorize = True
                c.roster.auto_subscribe = True
            x.send_presence_subscription(pto=y.boundjid.bare)
            y.send_presence_subscription(pto=x.boundjid.bare)
            deadline = asyncio.get_running_loop().time() + STEP
            while asyncio.get_running_loop().time() < deadline:
                if (x.client_roster[y.boundjid.bare]["subscription"] == "both"
                        and y.client_roster[x.boundjid.bare]["subscription"] == "both"):
                    break
                await asyncio.sleep(0.05)
            # What the server stored, not what the clients inferred.
            for c, other in ((x, y.boundjid.bare), (y, x.boundjid.bare)):
                r = await c.get_roster(timeout=STEP)
                if roster_items(r):
                    assert roster_item(r, other)["subscription"] == "both", (c.boundjid, other)
                assert c.client_roster[other]["subscription"] == "both", (c.boundjid, other)

    async def scenario():
        for r in range(4):
            await asyncio.gather(*(one_pair(a, b) for a, b in pairs[r * 8:(r + 1) * 8]))
    run(scenario())


def test_requests_waiting_for_alice_are_capped_and_the_oldest_is_told(kith_factory):
    """Requests from people on the same box wait like any other, trimmed and capped
    (`pending_subscriptions = 2` here): while alice is away bob, carol and dave ask to
    see her; dave's request pushes bob's, the oldest, out, and bob is told as if alice
    had said no. When alice comes back she finds two requests, carol's and dave's, with
    dave's nickname and his long status cut short."""
    k = kith_factory(limits={"pending_subscriptions": 2})
    for user in ("alice", "bob", "carol", "dave"):
        k.add_user(user)
    k.start()
    nick_ns = "http://jabber.org/protocol/nick"

    async def scenario():
        async with online(k, "bob") as bob:
            bob.send_presence_subscription(pto=ALICE, ptype="subscribe")
            await bob.next_roster_push(is_push_for(ALICE, "none", "subscribe"))
            async with online(k, "carol") as carol:
                carol.send_presence_subscription(pto=ALICE, ptype="subscribe")
                await carol.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
            async with online(k, "dave") as dave:
                p = dave.make_presence(pto=ALICE, ptype="subscribe",
                                       pstatus="let me in " + "please " * 20_000)
                nick = p.xml.makeelement(f"{{{nick_ns}}}nick", {})
                nick.text = "Dave"
                p.xml.append(nick)
                p.send()
                await dave.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
            no = await bob.next_presence(lambda p: p["type"] == "unsubscribed")
            assert no["from"].bare == ALICE
            push = await bob.next_roster_push(lambda iq: ALICE in roster_items(iq))
            assert roster_item(push, ALICE)["ask"] in ("", None, False), push
        async with online(k, "alice") as alice:
            got = {}
            while len(got) < 2:
                p = await alice.next_presence(lambda p: p["type"] == "subscribe")
                got[p["from"].bare] = p
            assert set(got) == {f"carol@{DOMAIN}", f"dave@{DOMAIN}"}, list(got)
            d = got[f"dave@{DOMAIN}"]
            assert d.xml.findtext(f"{{{nick_ns}}}nick") == "Dave"
            assert d["status"].startswith("let me in") and len(d["status"]) <= 512
            with contextlib.suppress(asyncio.TimeoutError):
                extra = await alice.next_presence(lambda p: p["type"] == "subscribe",
                                                  timeout=1.0)
                raise AssertionError(f"a third request: {extra}")
    run(scenario())
