"""Stream management inline in SASL2 (XEP-0198 with XEP-0388 and Bind2, XEP-0386): alice's
phone logs in, binds and turns stream management on in one round trip; when it loses signal
it comes back with one `<authenticate/>` (a FAST token and a `<resume/>`) and gets exactly
what it missed, once. A resume that cannot work says so inside `<success/>` and the phone
binds a fresh session instead. RawXmpp speaks SASL2 by hand (see conftest)."""

import asyncio
import xml.etree.ElementTree as ET

from conftest import (DOMAIN, NS_BIND, NS_BIND2, NS_CLIENT, NS_FAST, NS_SASL2, NS_STANZAS,
                      PASSWORD, STEP, authz_id, bind2_xml, fast_login, online, run,
                      sasl2_connect, sasl2_password_login, sasl2_send)
from test_sm import log_count, wait_for_log

NS_SM = "urn:xmpp:sm:3"
SM = f"{{{NS_SM}}}"
PHONE = ("0b5e1c8a-6a57-4d0e-b1f4-3c2d9e8f7a61", "Kith test app", "Alice's phone")
HIBERNATED = "session waits to be resumed"
STANZAS = tuple(f"{{{NS_CLIENT}}}{n}" for n in ("message", "presence", "iq"))


def body(el: ET.Element) -> str | None:
    return el.findtext(f"{{{NS_CLIENT}}}body") if el.tag == f"{{{NS_CLIENT}}}message" else None


class Phone:
    """A raw SASL2 connection that counts the stanzas it receives (its XEP-0198 `h`)."""

    def __init__(self, raw):
        self.raw = raw
        self.handled = 0

    def next(self, timeout: float = STEP) -> ET.Element:
        el = self.raw.element(timeout)
        if el.tag in STANZAS:
            self.handled += 1
        return el

    def until(self, pred, what: str) -> ET.Element:
        while True:
            el = self.next()
            if pred(el):
                return el
            assert el.tag != f"{{http://etherx.jabber.org/streams}}error", \
                f"stream error while waiting for {what}: {ET.tostring(el)!r}"

    def quiet(self, seconds: float = 1.0) -> list[ET.Element]:
        got = []
        while True:
            try:
                got.append(self.next(seconds))
            except TimeoutError:
                return got

    def ack_request(self) -> int:
        """<r/> → the server's <a h/> (stanzas arriving meanwhile are counted)."""
        self.raw.send(f"<r xmlns='{NS_SM}'/>")
        return int(self.until(lambda e: e.tag == f"{SM}a", "<a/>").get("h"))

    def ping(self, iq_id: str):
        self.raw.send(f"<iq type='get' id='{iq_id}' to='{DOMAIN}'>"
                      "<ping xmlns='urn:xmpp:ping'/></iq>")
        pong = self.until(lambda e: e.tag == f"{{{NS_CLIENT}}}iq" and e.get("id") == iq_id,
                          "the pong")
        assert pong.get("type") == "result", ET.tostring(pong)


def test_sm_is_offered_inline_in_sasl2_and_bind2(kith, test_ca):
    raw, features = sasl2_connect(kith, test_ca.client_context())
    inline = features.find(f"{{{NS_SASL2}}}authentication/{{{NS_SASL2}}}inline")
    assert inline.find(f"{SM}sm") is not None, ET.tostring(inline)
    bind_inline = inline.find(f"{{{NS_BIND2}}}bind/{{{NS_BIND2}}}inline")
    assert NS_SM in {f.get("var") for f in bind_inline.iter(f"{{{NS_BIND2}}}feature")}
    raw.close()


def test_inline_enable_then_resume_inside_authenticate_delivers_each_message_once(kith,
                                                                                 test_ca):
    ctx = test_ca.client_context()

    async def scenario():
        async with online(kith, "bob") as bob:
            # One round trip: authenticate, bind, enable stream management, ask for a token.
            raw, ok = await asyncio.to_thread(
                sasl2_password_login, kith, ctx, "alice", agent=PHONE,
                extra=bind2_xml("Phone", f"<enable xmlns='{NS_SM}' resume='true'/>")
                + f"<request-token xmlns='{NS_FAST}' mechanism='HT-SHA-256-NONE'/>")
            phone = Phone(raw)
            jid = authz_id(ok)
            enabled = ok.find(f"{{{NS_BIND2}}}bound/{SM}enabled")
            assert enabled is not None and enabled.get("resume") == "true" and \
                enabled.get("id"), ET.tostring(ok)
            previd = enabled.get("id")
            token = ok.find(f"{{{NS_FAST}}}token").get("token")
            # Counting starts at 0 with <success/>: nothing handled yet.
            assert await asyncio.to_thread(phone.ack_request) == 0
            raw.send("<presence/>")
            await asyncio.to_thread(phone.ping, "p1")
            assert await asyncio.to_thread(phone.ack_request) == 2, "presence + ping"

            def receive(text):
                return phone.until(lambda e: body(e) == text, repr(text))

            bob.send_message(mto=jid, mbody="acked", mtype="chat")
            await asyncio.to_thread(receive, "acked")
            raw.send(f"<a xmlns='{NS_SM}' h='{phone.handled}'/>")
            acked_h = phone.handled
            bob.send_message(mto=jid, mbody="received, never acked", mtype="chat")
            await asyncio.to_thread(receive, "received, never acked")

            # The phone loses signal; bob writes in the gap.
            hibernated = log_count(kith, HIBERNATED)
            raw.close()
            await asyncio.to_thread(wait_for_log, kith, HIBERNATED, hibernated)
            gap = [f"in the gap {i}" for i in range(3)]
            for text in gap:
                bob.send_message(mto=jid, mbody=text, mtype="chat")
            await bob.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)

            # Back: one <authenticate/> with the FAST token and the <resume/>.
            raw, _ = await asyncio.to_thread(sasl2_connect, kith, ctx)
            ok = await asyncio.to_thread(
                fast_login, raw, "alice", token, PHONE,
                extra=f"<resume xmlns='{NS_SM}' previd='{previd}' h='{acked_h}'/>")
            assert authz_id(ok) == jid, "the same session"
            resumed = ok.find(f"{SM}resumed")
            assert resumed is not None, ET.tostring(ok)
            assert resumed.get("previd") == previd and resumed.get("h") == "2"
            assert ok.find(f"{{{NS_BIND2}}}bound") is None
            phone = Phone(raw)
            got = [body(e) for e in await asyncio.to_thread(phone.quiet) if body(e)]
            assert got == ["received, never acked", *gap], got
            # Stream management goes on counting where it was.
            raw.send("<presence/>")
            assert await asyncio.to_thread(phone.ack_request) == 3
            bob.send_message(mto=jid, mbody="after", mtype="chat")
            await asyncio.to_thread(receive, "after")
            raw.close()

    run(scenario())


def test_resume_with_an_unknown_id_fails_inside_success_and_bind2_binds(kith, test_ca):
    ctx = test_ca.client_context()
    resume = f"<resume xmlns='{NS_SM}' previd='no-such-session' h='0'/>"
    raw, ok = sasl2_password_login(kith, ctx, "alice", agent=PHONE,
                                   extra=resume + bind2_xml(
                                       "Phone", f"<enable xmlns='{NS_SM}'/>"))
    failed = ok.find(f"{SM}failed")
    assert failed is not None and failed.find(f"{{{NS_STANZAS}}}item-not-found") is not None, \
        ET.tostring(ok)
    assert ok.find(f"{SM}resumed") is None
    bound = ok.find(f"{{{NS_BIND2}}}bound")
    assert bound is not None, ET.tostring(ok)
    enabled = bound.find(f"{SM}enabled")
    assert enabled is not None and enabled.get("id") is None, "not resumable: not asked"
    assert authz_id(ok).startswith(f"alice@{DOMAIN}/Phone.")
    phone = Phone(raw)
    phone.ping("p1")
    assert phone.ack_request() == 1
    raw.close()


def test_resume_with_an_unknown_id_and_no_bind2_leaves_classic_binding(kith, test_ca):
    ctx = test_ca.client_context()
    raw, _ = sasl2_connect(kith, ctx)
    sasl2_send(raw, "PLAIN", f"\0alice\0{PASSWORD}".encode(),
               f"<resume xmlns='{NS_SM}' previd='nope' h='0'/>")
    ok = raw.element()
    assert ok.find(f"{SM}failed") is not None, ET.tostring(ok)
    assert authz_id(ok) == f"alice@{DOMAIN}"
    features = raw.features()
    assert features.find(f"{{{NS_BIND}}}bind") is not None
    raw.send(f"<iq type='set' id='b1'><bind xmlns='{NS_BIND}'><resource>r</resource>"
             "</bind></iq>")
    iq = raw.expect(f"{{{NS_CLIENT}}}iq")
    assert iq.get("type") == "result", ET.tostring(iq)
    raw.close()


def test_another_accounts_session_cannot_be_resumed(kith, test_ca):
    ctx = test_ca.client_context()
    raw, ok = sasl2_password_login(kith, ctx, "alice", agent=PHONE,
                                   extra=bind2_xml("Phone",
                                                   f"<enable xmlns='{NS_SM}' resume='true'/>"))
    previd = ok.find(f"{{{NS_BIND2}}}bound/{SM}enabled").get("id")
    try:
        other, ok2 = sasl2_password_login(
            kith, ctx, "bob", extra=f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
        assert ok2.find(f"{SM}failed/{{{NS_STANZAS}}}item-not-found") is not None, \
            ET.tostring(ok2)
        other.close()
        # alice's session is untouched.
        assert Phone(raw).ack_request() == 0
    finally:
        raw.close()



def test_a_resume_right_after_the_drop_waits_for_the_session_and_takes_it(kith, test_ca):
    """The new connection may be faster than the server noticing the old one is gone."""
    ctx = test_ca.client_context()
    for attempt in range(3):
        raw, ok = sasl2_password_login(kith, ctx, "alice", agent=PHONE,
                                       extra=bind2_xml("Phone",
                                                       f"<enable xmlns='{NS_SM}' resume='true'/>"))
        previd = ok.find(f"{{{NS_BIND2}}}bound/{SM}enabled").get("id")
        raw.close()
        again, ok2 = sasl2_password_login(
            kith, ctx, "alice", agent=PHONE,
            extra=f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
        resumed = ok2.find(f"{SM}resumed")
        assert resumed is not None and resumed.get("previd") == previd, \
            f"attempt {attempt}: {ET.tostring(ok2)!r}"
        Phone(again).ping("p1")
        again.close()
