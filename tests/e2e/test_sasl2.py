"""SASL2 (XEP-0388) and Bind2 (XEP-0386): a phone logs in, binds its resource and turns on
carbons and CSI in one round trip, with the same mechanisms, limits and errors as classic
SASL. No client here implements SASL2 (see conftest), so RawXmpp speaks it by hand."""

import asyncio
import base64
import xml.etree.ElementTree as ET

import pytest

from conftest import (DOMAIN, NS_BIND, NS_BIND2, NS_CARBONS, NS_CLIENT, NS_CSI, NS_FAST, NS_SASL,
                      NS_SASL2, PASSWORD, STEP, Scram, authz_id, bind2_xml, online, run,
                      sasl2_connect, sasl2_failure, sasl2_password_login, sasl2_scram,
                      sasl2_send, stream_error_condition, tls_server_end_point)

PHONE = ("d2a2c5b6-1f3e-4c0a-9a51-7c1c0e1f0a01", "Kith test app", "Alice's phone")
LAPTOP = ("5b0e7d9e-3d6b-4a3a-8f0e-2b1c9d8e7f60", "Kith test app", "Alice's laptop")


def test_sasl2_is_offered_with_bind2_and_fast_inline(kith, test_ca):
    raw, feats = sasl2_connect(kith, test_ca.client_context())
    sasl1 = [m.text for m in feats.find(f"{{{NS_SASL}}}mechanisms")]
    auth = feats.find(f"{{{NS_SASL2}}}authentication")
    assert auth is not None, ET.tostring(feats)
    assert [m.text for m in auth.findall(f"{{{NS_SASL2}}}mechanism")] == sasl1, \
        "SASL2 offers exactly SASL1's mechanisms"
    inline = auth.find(f"{{{NS_SASL2}}}inline")
    bind_vars = {f.get("var") for f in
                 inline.findall(f"{{{NS_BIND2}}}bind/{{{NS_BIND2}}}inline/{{{NS_BIND2}}}feature")}
    assert {NS_CARBONS, NS_CSI} <= bind_vars, bind_vars
    fast = [m.text for m in inline.findall(f"{{{NS_FAST}}}fast/{{{NS_FAST}}}mechanism")]
    assert "HT-SHA-256-NONE" in fast and "HT-SHA-256-ENDP" in fast, fast
    raw.close()


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256",
                                  "SCRAM-SHA-1", "PLAIN"])
def test_each_mechanism_then_classic_binding_without_a_restart(kith, test_ca, mech):
    raw, _ = sasl2_connect(kith, test_ca.client_context())
    if mech == "PLAIN":
        sasl2_send(raw, mech, f"\0alice\0{PASSWORD}".encode())
        el = raw.element()
    else:
        hash_name = "sha1" if "SHA-1" in mech else "sha256"
        cb = ("tls-server-end-point", tls_server_end_point(raw.sock)) \
            if mech.endswith("-PLUS") else (None, b"")
        el = sasl2_scram(raw, mech, Scram(hash_name, "alice", PASSWORD, cb[0], cb[1]))
    assert authz_id(el) == f"alice@{DOMAIN}", "no Bind2: the bare JID"
    # No stream restart: the features of the authenticated stream follow at once.
    feats = raw.features()
    assert feats.find(f"{{{NS_BIND}}}bind") is not None, ET.tostring(feats)
    raw.send(f"<iq type='set' id='b1'><bind xmlns='{NS_BIND}'><resource>desk</resource>"
             f"</bind></iq>")
    iq = raw.expect(f"{{{NS_CLIENT}}}iq")
    assert iq.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid").text == f"alice@{DOMAIN}/desk"
    raw.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert raw.expect(f"{{{NS_CLIENT}}}iq").get("type") == "result"
    raw.close()


@pytest.mark.parametrize("user,password", [("alice", "wrong"), ("nobody", PASSWORD)])
def test_wrong_password_fails_and_the_stream_stays_usable(kith, test_ca, user, password):
    raw, _ = sasl2_connect(kith, test_ca.client_context())
    el = sasl2_scram(raw, "SCRAM-SHA-256", Scram("sha256", user, password, None))
    assert sasl2_failure(el) == "not-authorized"
    assert el.find(f"{{{NS_SASL2}}}text").text, "a failure explains itself"
    # Failure changes nothing: the right password works on the same stream.
    el = sasl2_scram(raw, "SCRAM-SHA-256", Scram("sha256", "alice", PASSWORD, None))
    assert authz_id(el) == f"alice@{DOMAIN}"
    raw.close()


def test_unknown_mechanism_and_plus_without_binding_are_refused(kith, test_ca):
    raw, _ = sasl2_connect(kith, test_ca.client_context())
    sasl2_send(raw, "DIGEST-MD5", b"x")
    assert sasl2_failure(raw.element()) == "invalid-mechanism"
    el = sasl2_scram(raw, "SCRAM-SHA-256-PLUS",
                     Scram("sha256", "alice", PASSWORD, "tls-server-end-point", b"\0" * 32))
    assert sasl2_failure(el) == "not-authorized", "wrong channel-binding data"
    raw.close()


def test_three_failed_attempts_close_the_connection(kith, test_ca):
    raw, _ = sasl2_connect(kith, test_ca.client_context())
    for _ in range(2):
        sasl2_send(raw, "PLAIN", b"\0alice\0wrong")
        assert sasl2_failure(raw.element()) == "not-authorized"
    sasl2_send(raw, "PLAIN", b"\0alice\0wrong")
    assert sasl2_failure(raw.element()) == "not-authorized"
    raw.read_until_closed()
    assert stream_error_condition(raw.raw) == "policy-violation"


def test_failed_logins_are_rate_limited_across_sasl1_and_sasl2(kith_factory, test_ca):
    k = kith_factory(limits={"auth_failures_per_minute": 2})
    k.add_user("alice")
    k.start()
    ctx = test_ca.client_context()
    for _ in range(2):
        raw, _ = sasl2_connect(k, ctx)
        sasl2_send(raw, "PLAIN", b"\0alice\0wrong")
        assert sasl2_failure(raw.element()) == "not-authorized"
        raw.close()
    raw, _ = sasl2_connect(k, ctx)
    sasl2_send(raw, "PLAIN", f"\0alice\0{PASSWORD}".encode())
    assert sasl2_failure(raw.element()) == "temporary-auth-failure", \
        "even the right password waits after too many failures"
    raw.close()


def bind2_login(kith, ctx, agent, tag="Phone", inline=""):
    return sasl2_password_login(kith, ctx, "alice", agent=agent,
                                extra=bind2_xml(tag, inline))


def test_bind2_gives_each_device_its_own_stable_resource(kith, test_ca):
    ctx = test_ca.client_context()
    raw, ok = bind2_login(kith, ctx, PHONE)
    jid = authz_id(ok)
    bare, resource = jid.split("/", 1)
    assert bare == f"alice@{DOMAIN}" and resource.startswith("Phone."), jid
    assert ok.find(f"{{{NS_BIND2}}}bound") is not None
    # The session is live at once: no <bind/> round trip.
    raw.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    pong = raw.expect(f"{{{NS_CLIENT}}}iq")
    assert pong.get("type") == "result" and pong.get("to") == jid

    # The laptop gets another resource; the phone reconnecting gets its own again and
    # replaces its stale session.
    raw2, ok2 = bind2_login(kith, ctx, LAPTOP)
    assert authz_id(ok2) != jid
    raw3, ok3 = bind2_login(kith, ctx, PHONE)
    assert authz_id(ok3) == jid, "same device, same resource"
    raw.read_until_closed()
    assert stream_error_condition(raw.raw) == "conflict"
    for r in (raw2, raw3):
        r.close()


def test_inline_carbons_copy_the_laptops_chat_to_the_phone(kith, test_ca):
    ctx = test_ca.client_context()

    async def scenario():
        phone, ok = bind2_login(kith, ctx, PHONE, inline=f"<enable xmlns='{NS_CARBONS}'/>")
        phone_jid = authz_id(ok)
        async with online(kith, "alice", "laptop") as laptop, online(kith, "bob") as bob:
            laptop.send_message(mto=f"bob@{DOMAIN}", mbody="on my way", mtype="chat")
            assert (await bob.next_message())["body"] == "on my way"
            sent = await asyncio.to_thread(phone.expect, f"{{{NS_CLIENT}}}message")
            fwd = sent.find(f"{{{NS_CARBONS}}}sent/{{urn:xmpp:forward:0}}forwarded/"
                            f"{{{NS_CLIENT}}}message")
            assert fwd is not None and fwd.find(f"{{{NS_CLIENT}}}body").text == "on my way"
            assert sent.get("to") == phone_jid

            bob.send_message(mto=f"alice@{DOMAIN}/laptop", mbody="see you", mtype="chat")
            assert (await laptop.next_message())["body"] == "see you"
            got = await asyncio.to_thread(phone.expect, f"{{{NS_CLIENT}}}message")
            fwd = got.find(f"{{{NS_CARBONS}}}received/{{urn:xmpp:forward:0}}forwarded/"
                           f"{{{NS_CLIENT}}}message")
            assert fwd is not None and fwd.find(f"{{{NS_CLIENT}}}body").text == "see you"
        phone.close()

    run(scenario())


def test_inline_csi_starts_the_phone_inactive(kith, test_ca):
    ctx = test_ca.client_context()

    async def scenario():
        phone, ok = bind2_login(kith, ctx, PHONE, inline=f"<inactive xmlns='{NS_CSI}'/>")
        phone_jid = authz_id(ok)
        async with online(kith, "bob") as bob:
            bob.register_plugin("xep_0085")
            typing = bob.make_message(mto=phone_jid, mtype="chat")
            typing["chat_state"] = "composing"
            typing.send()
            await bob.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)  # routed by now
            with pytest.raises(TimeoutError):
                await asyncio.to_thread(phone.element, 1.0)  # held: the phone sleeps on
            bob.send_message(mto=phone_jid, mbody="dinner is ready", mtype="chat")
            first = await asyncio.to_thread(phone.expect, f"{{{NS_CLIENT}}}message")
            second = await asyncio.to_thread(phone.expect, f"{{{NS_CLIENT}}}message")
            assert first.find("{http://jabber.org/protocol/chatstates}composing") is not None
            assert second.find(f"{{{NS_CLIENT}}}body").text == "dinner is ready"
        phone.close()

    run(scenario())


def test_stanzas_before_authentication_are_refused(kith, test_ca):
    raw, _ = sasl2_connect(kith, test_ca.client_context())
    raw.send("<message to='bob@localhost'><body>hi</body></message>")
    raw.read_until_closed()
    assert stream_error_condition(raw.raw) == "not-authorized"


def test_bad_base64_and_abort_fail_cleanly(kith, test_ca):
    raw, _ = sasl2_connect(kith, test_ca.client_context())
    raw.send(f"<authenticate xmlns='{NS_SASL2}' mechanism='PLAIN'>"
             f"<initial-response>!!not base64!!</initial-response></authenticate>")
    assert sasl2_failure(raw.element()) == "incorrect-encoding"
    sasl2_send(raw, "SCRAM-SHA-256", Scram("sha256", "alice", PASSWORD, None).first())
    assert raw.element().tag == f"{{{NS_SASL2}}}challenge"
    raw.send(f"<abort xmlns='{NS_SASL2}'/>")
    assert sasl2_failure(raw.element()) == "aborted"
    raw.close()


def test_fast_mechanisms_are_not_offered_to_classic_sasl(kith, test_ca):
    raw, feats = sasl2_connect(kith, test_ca.client_context())
    assert not any(m.text.startswith("HT-") for m in feats.find(f"{{{NS_SASL}}}mechanisms"))
    data = base64.b64encode(b"alice\0" + b"x" * 32).decode()
    raw.send(f"<auth xmlns='{NS_SASL}' mechanism='HT-SHA-256-NONE'>{data}</auth>")
    el = raw.element()
    assert el.tag == f"{{{NS_SASL}}}failure"
    assert el.find(f"{{{NS_SASL}}}invalid-mechanism") is not None
    raw.close()
