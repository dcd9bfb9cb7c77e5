"""Stream management (XEP-0198): bob's phone loses signal in the middle of a
conversation. alice keeps writing; when the phone reconnects it resumes its session
and gets exactly the messages it missed — once. If it stays away longer than the
resumption window, or the server is killed meanwhile, nothing the server acknowledged
is lost: the messages wait in offline storage for the next login."""

import asyncio
import signal
import xml.etree.ElementTree as ET

from conftest import (DOMAIN, NS_BIND, NS_CLIENT, NS_STANZAS, STEP, Client, RawXmpp,
                      online, run, stream_error_condition, wait_until)

NS_SM = "urn:xmpp:sm:3"
NS_PING = "urn:xmpp:ping"
SM = f"{{{NS_SM}}}"


# --------------------------------------------------------------------------- helpers


def authenticated(kith, ctx, user: str) -> tuple[RawXmpp, ET.Element]:
    """A raw connection, logged in as `user`, after the stream restart: (raw, features)."""
    raw = RawXmpp(kith.c2s_port)
    raw.starttls(ctx)
    raw.mechanisms()
    res = raw.auth_plain(user)
    assert res.tag.endswith("success"), ET.tostring(res)
    raw.open_stream()
    return raw, raw.features()


def bind(raw: RawXmpp, resource: str) -> str:
    raw.send(f"<iq type='set' id='bind1'><bind xmlns='{NS_BIND}'>"
             f"<resource>{resource}</resource></bind></iq>")
    iq = raw.expect(f"{{{NS_CLIENT}}}iq")
    assert iq.get("type") == "result", ET.tostring(iq)
    return iq.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid").text


def enable(raw: RawXmpp) -> ET.Element:
    raw.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
    return raw.expect(f"{SM}enabled")


def ack_request(raw: RawXmpp, skipped: list | None = None) -> int:
    """Send <r/>, skip (into `skipped`) what arrives before the <a/>, return its h."""
    raw.send(f"<r xmlns='{NS_SM}'/>")
    while True:
        el = raw.element()
        if el.tag == f"{SM}a":
            return int(el.get("h"))
        if skipped is not None:
            skipped.append(el)


def bodies(elements) -> list[str]:
    return [el.findtext(f"{{{NS_CLIENT}}}body") for el in elements
            if el.tag == f"{{{NS_CLIENT}}}message"
            and el.findtext(f"{{{NS_CLIENT}}}body") is not None]


def messages_until_quiet(raw: RawXmpp, quiet: float = 1.0) -> list[ET.Element]:
    """Every element until nothing more arrives for `quiet` seconds."""
    got = []
    while True:
        try:
            got.append(raw.element(quiet))
        except TimeoutError:
            return got


def log_count(kith, text: str) -> int:
    return kith.log_path.read_text(errors="replace").count(text)


def wait_for_log(kith, text: str, before: int):
    wait_until(lambda: log_count(kith, text) > before, STEP, f"log line {text!r}")


HIBERNATED = "session waits to be resumed"


class SmClient(Client):
    """A slixmpp client with the real XEP-0198 plugin, acking every stanza it gets
    asked about; `drop()` cuts its TCP connection without a goodbye, like a phone
    that loses signal."""

    def __init__(self, server, jid, **kw):
        super().__init__(server, jid, **kw)
        self.register_plugin("xep_0198")
        self.resumed = asyncio.get_running_loop().create_future()
        self.sm_failed = asyncio.get_running_loop().create_future()
        self.add_event_handler("session_resumed",
                               lambda s: self.resumed.done() or self.resumed.set_result(s))
        self.add_event_handler("sm_failed",
                               lambda s: self.sm_failed.done() or self.sm_failed.set_result(s))
        self.add_event_handler("sm_enabled", lambda s: None)

    def drop(self):
        self.gone = asyncio.get_running_loop().create_future()
        self.transport.abort()

    async def reconnect(self):
        await asyncio.wait_for(asyncio.shield(self.gone), STEP)
        self.connect("127.0.0.1", self.kith.c2s_port)


# --------------------------------------------------------------------------- tests


def test_enable_and_acks_both_ways(kith, test_ca):
    ctx = test_ca.client_context()
    raw, feats = authenticated(kith, ctx, "bob")
    try:
        assert feats.find(f"{SM}sm") is not None, "stream management is offered after login"
        raw.send(f"<enable xmlns='{NS_SM}'/>")
        failed = raw.expect(f"{SM}failed")
        assert failed.find(f"{{{NS_STANZAS}}}unexpected-request") is not None, \
            "enable before binding a resource is refused"
        bind(raw, "phone")
        enabled = enable(raw)
        assert enabled.get("resume") == "true" and enabled.get("id")
        assert enabled.get("max") == "300"
        raw.send(f"<enable xmlns='{NS_SM}'/>")
        failed = raw.expect(f"{SM}failed")
        assert failed.find(f"{{{NS_STANZAS}}}unexpected-request") is not None

        # Inbound: the server counts handled stanzas (not nonzas).
        assert ack_request(raw) == 0
        got = []
        for i in range(3):
            raw.send(f"<iq type='get' id='p{i}' to='{DOMAIN}'><ping xmlns='{NS_PING}'/></iq>")
        assert ack_request(raw, got) == 3

        # Outbound: after 5 unacked stanzas the server asks for an ack.
        for i in range(3, 5):
            raw.send(f"<iq type='get' id='p{i}' to='{DOMAIN}'><ping xmlns='{NS_PING}'/></iq>")
        while not got or got[-1].tag != f"{SM}r":
            got.append(raw.element())
        assert [e.tag for e in got] == [f"{{{NS_CLIENT}}}iq"] * 5 + [f"{SM}r"], got
        raw.send(f"<a xmlns='{NS_SM}' h='5'/>")
        assert ack_request(raw) == 5

        # Acknowledging more than was sent is a stream error.
        raw.send(f"<a xmlns='{NS_SM}' h='9'/>")
        raw.read_until_closed()
        assert stream_error_condition(raw.raw) == "undefined-condition"
        assert b"handled-count-too-high" in raw.raw and b"send-count='5'" in raw.raw
    finally:
        raw.close()


def test_a_phone_resumes_after_losing_signal_and_gets_every_message_once(kith):
    async def scenario():
        async with online(kith, "alice", "laptop") as alice:
            bob = SmClient(kith, f"bob@{DOMAIN}/phone")
            try:
                await bob.login()
                await bob.get_roster(timeout=STEP)
                bob.send_presence()
                bob.send_presence(pto=alice.boundjid)  # directed: alice sees bob
                await bob.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
                assert bob.plugin["xep_0198"].sm_id, "resumption was enabled"
                await alice.next_presence(lambda p: p["from"] == bob.boundjid)
                await _exchange(alice, bob, "before the tunnel")

                hibernated = log_count(kith, HIBERNATED)
                bob.drop()
                await asyncio.to_thread(wait_for_log, kith, HIBERNATED, hibernated)
                gap = [f"in the tunnel {i}" for i in range(5)]
                for body in gap:
                    alice.send_message(mto=f"bob@{DOMAIN}", mbody=body, mtype="chat")
                await alice.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)

                await bob.reconnect()
                await asyncio.wait_for(asyncio.shield(bob.resumed), STEP)
                got = [(await bob.next_message())["body"] for _ in gap]
                assert got == gap
                await bob.expect_no_message(1.0)

                # bob stayed available all along: alice saw no unavailable presence.
                while not alice.presences.empty():
                    p = alice.presences.get_nowait()
                    assert p["type"] != "unavailable", f"alice saw {p}"
                await _exchange(alice, bob, "after the tunnel")
            finally:
                await bob.close()
    run(scenario())


async def _exchange(alice, bob, body):
    alice.send_message(mto=f"bob@{DOMAIN}", mbody=body, mtype="chat")
    msg = await bob.next_message()
    assert msg["body"] == body


def test_after_the_window_messages_wait_offline_and_arrive_once(kith_factory):
    kith = kith_factory(limits={"sm_resume_timeout_secs": 2})
    for user in ("alice", "bob"):
        kith.add_user(user)
    kith.start()

    async def scenario():
        async with online(kith, "alice", "laptop") as alice:
            bob = SmClient(kith, f"bob@{DOMAIN}/phone")
            try:
                await bob.login()
                bob.send_presence()
                bob.send_presence(pto=alice.boundjid)  # directed: alice sees bob
                await bob.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
                # Sent live, never acknowledged by the phone: it must not be lost.
                alice.send_message(mto=f"bob@{DOMAIN}", mbody="unacked", mtype="chat")
                await bob.next_message()
                bob.plugin["xep_0198"].handled -= 1  # as if it had not arrived

                hibernated = log_count(kith, HIBERNATED)
                bob.drop()
                await asyncio.to_thread(wait_for_log, kith, HIBERNATED, hibernated)
                alice.send_message(mto=f"bob@{DOMAIN}", mbody="gap", mtype="chat")
                await alice.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
                expired = log_count(kith, "resumption window expired")
                await asyncio.to_thread(wait_for_log, kith, "resumption window expired",
                                        expired)
                # Only now does alice see bob go offline.
                await alice.next_presence(lambda p: p["type"] == "unavailable")

                await bob.reconnect()
                failed = await asyncio.wait_for(asyncio.shield(bob.sm_failed), STEP)
                assert failed.xml.find(f"{{{NS_STANZAS}}}item-not-found") is not None
                await asyncio.wait_for(asyncio.shield(bob.session), STEP)
                bob.send_presence()
                got = sorted([(await bob.next_message())["body"] for _ in range(2)])
                assert got == ["gap", "unacked"]
                await bob.expect_no_message(1.0)
            finally:
                await bob.close()
    run(scenario())


def test_resume_with_a_wrong_id_or_account_fails(kith, test_ca):
    ctx = test_ca.client_context()
    bob, _ = authenticated(kith, ctx, "bob")
    try:
        bind(bob, "phone")
        previd = enable(bob).get("id")
        for user, resume in [("bob", f"<resume xmlns='{NS_SM}' previd='nope' h='0'/>"),
                             ("carol", f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>"),
                             ("bob", f"<resume xmlns='{NS_SM}' previd='{previd}' h='x'/>")]:
            raw, _ = authenticated(kith, ctx, user)
            try:
                raw.send(resume)
                failed = raw.expect(f"{SM}failed")
                assert (failed.find(f"{{{NS_STANZAS}}}item-not-found") is not None
                        or failed.find(f"{{{NS_STANZAS}}}bad-request") is not None), \
                    ET.tostring(failed)
                # The connection can still bind a resource.
                assert bind(raw, "other").startswith(f"{user}@{DOMAIN}/")
            finally:
                raw.close()
        # bob's own session was not disturbed.
        assert ack_request(bob) == 0
    finally:
        bob.close()


def test_only_one_resume_per_id_and_the_old_connection_is_closed(kith, test_ca):
    ctx = test_ca.client_context()
    old, _ = authenticated(kith, ctx, "bob")
    bind(old, "phone")
    previd = enable(old).get("id")
    # The old connection is still open (half-open, as far as the server knows).
    first, _ = authenticated(kith, ctx, "bob")
    second = None
    try:
        first.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
        resumed = first.expect(f"{SM}resumed")
        assert resumed.get("previd") == previd and resumed.get("h") == "0"
        old.read_until_closed()
        second, _ = authenticated(kith, ctx, "bob")
        second.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
        assert second.expect(f"{SM}failed").find(f"{{{NS_STANZAS}}}item-not-found") is not None
        # The resumed stream works.
        first.send(f"<iq type='get' id='p' to='{DOMAIN}'><ping xmlns='{NS_PING}'/></iq>")
        assert first.expect(f"{{{NS_CLIENT}}}iq").get("type") == "result"
    finally:
        for r in (old, first, second):
            if r is not None:
                r.close()


def test_a_phone_that_never_acks_is_cut_off_and_loses_nothing(kith_factory, test_ca):
    kith = kith_factory(limits={"sm_max_unacked": 10})
    for user in ("alice", "bob"):
        kith.add_user(user)
    kith.start()
    ctx = test_ca.client_context()

    async def scenario():
        raw, _ = authenticated(kith, ctx, "bob")
        bind(raw, "phone")
        raw.send(f"<enable xmlns='{NS_SM}'/>")  # acks, no resumption
        raw.expect(f"{SM}enabled")
        raw.send("<presence/>")
        async with online(kith, "alice", "laptop") as alice:
            sent = [f"m{i}" for i in range(20)]
            for body in sent:
                alice.send_message(mto=f"bob@{DOMAIN}/phone", mbody=body, mtype="chat")
            await alice.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
            await asyncio.to_thread(raw.read_until_closed)
            assert stream_error_condition(raw.raw) == "policy-violation"
            raw.close()
            async with online(kith, "bob", "phone", presence=False) as bob:
                bob.send_presence()
                got = [(await bob.next_message())["body"] for _ in sent]
                assert got == sent
                await bob.expect_no_message(1.0)
    run(scenario())


def test_what_the_server_acked_survives_kill_9(kith, test_ca):
    """bob's phone is in a tunnel (its session hibernated, two messages unacked), alice
    sends three more and the server acks them; the server is killed with SIGKILL and
    started again: bob gets all five, once."""
    ctx = test_ca.client_context()
    bob, _ = authenticated(kith, ctx, "bob")
    bind(bob, "phone")
    enable(bob)
    bob.send("<presence/>")
    alice, _ = authenticated(kith, ctx, "alice")
    bind(alice, "laptop")
    enable(alice)

    def say(body):
        alice.send(f"<message to='bob@{DOMAIN}' type='chat'><body>{body}</body></message>")

    try:
        say("one")
        say("two")
        assert ack_request(alice) == 2
        got = bodies(messages_until_quiet(bob, 1.0))
        assert got == ["one", "two"], got
        hibernated = log_count(kith, HIBERNATED)
        bob.close()  # never acked: the phone's signal is gone
        wait_for_log(kith, HIBERNATED, hibernated)
        for body in ("three", "four", "five"):
            say(body)
        assert ack_request(alice) == 5, "the server acked alice's messages"
        alice.close()

        kith.stop(signal.SIGKILL)
        kith.start()

        async def bob_logs_in():
            async with online(kith, "bob", "phone", presence=False) as phone:
                phone.send_presence()
                got = [(await phone.next_message())["body"] for _ in range(5)]
                assert got == ["one", "two", "three", "four", "five"], got
                await phone.expect_no_message(1.0)
        run(bob_logs_in())
    finally:
        bob.close()
        alice.close()


def test_acked_messages_for_an_offline_account_survive_kill_9(kith, test_ca):
    """alice writes a burst of 200 messages to bob, who is offline; once the server acked
    them it is killed with SIGKILL; after a restart bob gets all 200, once, in order."""
    ctx = test_ca.client_context()
    alice, _ = authenticated(kith, ctx, "alice")
    sent = [f"o{i}" for i in range(200)]
    try:
        bind(alice, "laptop")
        enable(alice)
        alice.send("".join(f"<message to='bob@{DOMAIN}' type='chat'><body>{b}</body></message>"
                           for b in sent))
        assert ack_request(alice) == len(sent)
    finally:
        alice.close()
    kith.stop(signal.SIGKILL)
    kith.start()

    async def bob_logs_in():
        async with online(kith, "bob", "phone", presence=False) as phone:
            phone.send_presence()
            got = [(await phone.next_message())["body"] for _ in sent]
            assert got == sent
            await phone.expect_no_message(1.0)
    run(bob_logs_in())


def test_a_phone_waiting_to_resume_gets_a_push_and_then_the_message(kith_extra):
    """alice's phone app was suspended by the OS mid-connection: her session waits to be
    resumed. bob writes; the push app server is told (XEP-0357), the phone wakes up,
    resumes, and gets the message once."""
    from conftest import AppServer, enable_push
    app_jid, secret = "push.localhost", "app-server-secret"
    kith = kith_extra(component=True, sections={"components": {app_jid: secret},
                                                "push": {"min_interval_secs": 1}})

    async def scenario():
        app = await AppServer(kith, app_jid, secret).start()
        alice = SmClient(kith, f"alice@{DOMAIN}/phone")
        try:
            await alice.login()
            alice.send_presence()
            await enable_push(alice, app_jid, "phone-node")
            hibernated = log_count(kith, HIBERNATED)
            alice.drop()
            await asyncio.to_thread(wait_for_log, kith, HIBERNATED, hibernated)
            async with online(kith, "bob", "laptop") as bob:
                bob.send_message(mto=f"alice@{DOMAIN}", mbody="wake up", mtype="chat")
                n = await app.next_notification()
                assert n.account == f"alice@{DOMAIN}" and n.node == "phone-node", n
                await alice.reconnect()
                await asyncio.wait_for(asyncio.shield(alice.resumed), STEP)
                assert (await alice.next_message())["body"] == "wake up"
                await alice.expect_no_message(1.0)
        finally:
            await alice.close()
            await app.close()
    run(scenario())
