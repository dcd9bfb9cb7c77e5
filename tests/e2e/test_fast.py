"""FAST (XEP-0484): alice's phone logs in once with her password and gets a token; from
then on it reconnects with the token alone, in one round trip. Tokens are bound to the
device and the mechanism, stored only as hashes, replay-protected, rotated, invalidated on
request, and revoked when the password changes or the admin says so. No client here
implements FAST (see conftest), so RawXmpp speaks it by hand."""

import datetime
import hashlib
import sqlite3
import xml.etree.ElementTree as ET

from conftest import (DOMAIN, NS_CLIENT, NS_FAST, NS_SASL2, PASSWORD, Scram, authz_id, bind2_xml,
                      fast_login, sasl2_connect, sasl2_failure, sasl2_password_login, sasl2_scram,
                      tls_server_end_point)

PHONE = ("0f5c3e4a-8d2b-4f6e-9c1a-3b7d5e9f1a2c", "Kith test app", "Alice's phone")
TABLET = ("7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "Kith test app", "Alice's tablet")


def request_token(kith, ctx, agent=PHONE, mech="HT-SHA-256-NONE", tag="Phone"):
    """Password login that asks for a token; returns (token, expiry, full JID)."""
    raw, ok = sasl2_password_login(
        kith, ctx, "alice", agent=agent,
        extra=bind2_xml(tag) + f"<request-token xmlns='{NS_FAST}' mechanism='{mech}'/>")
    tok = ok.find(f"{{{NS_FAST}}}token")
    assert tok is not None, ET.tostring(ok)
    raw.close()
    return tok.get("token"), tok.get("expiry"), authz_id(ok)


def token_login(kith, ctx, token, agent=PHONE, **kw):
    raw, _ = sasl2_connect(kith, ctx)
    el = fast_login(raw, "alice", token, agent, **kw)
    return raw, el


def db_rows(kith, sql, args=()):
    con = sqlite3.connect(kith.data_dir / "kith.db", timeout=10)
    try:
        with con:  # commits
            return con.execute(sql, args).fetchall()
    finally:
        con.close()


def test_a_token_logs_the_phone_in_without_its_password(kith, test_ca):
    ctx = test_ca.client_context()
    token, expiry, jid = request_token(kith, ctx)
    assert len(token) >= 64
    expires = datetime.datetime.strptime(expiry, "%Y-%m-%dT%H:%M:%SZ")
    days = (expires - datetime.datetime.utcnow()).days
    assert 19 <= days <= 21, expiry

    raw, ok = token_login(kith, ctx, token, fast_attrs="count='1'", extra=bind2_xml("Phone"))
    assert authz_id(ok) == jid, "the token login binds the device's own resource"
    assert ok.find(f"{{{NS_FAST}}}token") is None, "a fresh token is not rotated"
    raw.features()
    raw.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert raw.expect(f"{{{NS_CLIENT}}}iq").get("type") == "result"
    raw.close()


def test_channel_bound_tokens_need_their_binding_and_mechanism(kith, test_ca):
    ctx = test_ca.client_context()
    token, _, _ = request_token(kith, ctx, mech="HT-SHA-256-ENDP")
    raw, _ = sasl2_connect(kith, ctx)
    el = fast_login(raw, "alice", token, PHONE, mech="HT-SHA-256-ENDP",
                    cb=tls_server_end_point(raw.sock))
    assert authz_id(el) == f"alice@{DOMAIN}"
    raw.close()
    raw, _ = sasl2_connect(kith, ctx)
    el = fast_login(raw, "alice", token, PHONE, mech="HT-SHA-256-ENDP", cb=b"\0" * 32)
    assert sasl2_failure(el) == "not-authorized", "wrong channel-binding data"
    raw.close()
    raw, el = token_login(kith, ctx, token)  # HT-SHA-256-NONE
    assert sasl2_failure(el) == "not-authorized", "the token is bound to -ENDP"
    raw.close()


def test_a_replayed_count_is_refused(kith, test_ca):
    ctx = test_ca.client_context()
    token, _, _ = request_token(kith, ctx)
    for count, ok in [(1, True), (1, False), (2, True), (2, False), (1, False), (7, True)]:
        raw, el = token_login(kith, ctx, token, fast_attrs=f"count='{count}'")
        if ok:
            authz_id(el)
        else:
            assert sasl2_failure(el) == "not-authorized", count
            assert "replay" in el.find(f"{{{NS_SASL2}}}text").text
        raw.close()


def test_tokens_belong_to_one_device_and_one_account(kith, test_ca):
    ctx = test_ca.client_context()
    token, _, _ = request_token(kith, ctx)
    for user, agent in [("alice", TABLET), ("bob", PHONE), ("nobody", PHONE)]:
        raw, _ = sasl2_connect(kith, ctx)
        el = fast_login(raw, user, token, agent)
        assert sasl2_failure(el) == "not-authorized", (user, agent)
        raw.close()
    raw, el = token_login(kith, ctx, "f" * 96)
    assert sasl2_failure(el) == "not-authorized", "a made-up token"
    raw.close()


def test_a_token_needs_a_user_agent_id(kith, test_ca):
    raw, _ = sasl2_connect(kith, test_ca.client_context())
    el = sasl2_scram(raw, "SCRAM-SHA-256", Scram("sha256", "alice", PASSWORD, None),
                     f"<request-token xmlns='{NS_FAST}' mechanism='HT-SHA-256-NONE'/>")
    assert sasl2_failure(el) == "malformed-request"
    raw.close()


def test_invalidated_token_is_refused(kith, test_ca):
    ctx = test_ca.client_context()
    token, _, _ = request_token(kith, ctx)
    raw, el = token_login(kith, ctx, token, fast_attrs="invalidate='true'")
    authz_id(el)  # logging out still logs in once
    assert el.find(f"{{{NS_FAST}}}token") is None
    raw.close()
    raw, el = token_login(kith, ctx, token)
    assert sasl2_failure(el) == "not-authorized"
    raw.close()


def test_rotation_keeps_the_old_token_until_the_new_one_is_used(kith, test_ca):
    ctx = test_ca.client_context()
    old, _, _ = request_token(kith, ctx)
    raw, el = token_login(kith, ctx, old,
                          extra=f"<request-token xmlns='{NS_FAST}' mechanism='HT-SHA-256-NONE'/>")
    new = el.find(f"{{{NS_FAST}}}token").get("token")
    assert new != old
    raw.close()
    # The phone lost the connection before it saved the new token: the old one still works.
    raw, el = token_login(kith, ctx, old)
    authz_id(el)
    raw.close()
    # Once the new token was used, the old one is dead.
    raw, el = token_login(kith, ctx, new)
    authz_id(el)
    raw.close()
    raw, el = token_login(kith, ctx, old)
    assert sasl2_failure(el) == "not-authorized"
    raw.close()


def test_an_old_token_is_rotated_by_the_server(kith, test_ca):
    ctx = test_ca.client_context()
    token, _, _ = request_token(kith, ctx)
    raw, el = token_login(kith, ctx, token)  # makes it the current token
    raw.close()
    db_rows(kith, "UPDATE fast_tokens SET issued_at = issued_at - 2 * 86400")
    raw, el = token_login(kith, ctx, token)
    rotated = el.find(f"{{{NS_FAST}}}token")
    assert rotated is not None, "a day-old token is replaced at its next use"
    raw.close()
    raw, el = token_login(kith, ctx, rotated.get("token"))
    authz_id(el)
    raw.close()


def test_expired_token_is_refused(kith, test_ca):
    ctx = test_ca.client_context()
    token, _, _ = request_token(kith, ctx)
    # Age the token: its expiry is in the past (the clock is not the server's to fake).
    db_rows(kith, "UPDATE fast_tokens SET expires_at = 1000")
    raw, el = token_login(kith, ctx, token)
    assert sasl2_failure(el) == "credentials-expired"
    raw.close()


def test_tokens_are_stored_hashed(kith, test_ca):
    ctx = test_ca.client_context()
    token, _, _ = request_token(kith, ctx)
    rows = db_rows(kith, "SELECT token_hash, agent_id, device FROM fast_tokens")
    assert rows == [(hashlib.sha256(token.encode()).digest(), PHONE[0], PHONE[2])]
    for name in ("kith.db", "kith.db-wal"):
        path = kith.data_dir / name
        if path.exists():
            assert token.encode() not in path.read_bytes(), f"the token is in {name}"


def test_a_password_change_revokes_every_token(kith, test_ca):
    ctx = test_ca.client_context()
    token, _, _ = request_token(kith, ctx)
    kith.cli("user", "passwd", f"alice@{DOMAIN}", stdin="a new password\n")
    raw, el = token_login(kith, ctx, token)
    assert sasl2_failure(el) == "not-authorized"
    raw.close()


def test_the_admin_lists_and_revokes_a_lost_phones_tokens(kith, test_ca):
    ctx = test_ca.client_context()
    token, _, _ = request_token(kith, ctx)
    tablet, _, _ = request_token(kith, ctx, agent=TABLET, tag="Tablet")
    out = kith.cli("user", "tokens", f"alice@{DOMAIN}").stdout
    assert PHONE[0] in out and "Alice's phone" in out and TABLET[0] in out, out
    assert "no login tokens" in kith.cli("user", "tokens", f"bob@{DOMAIN}").stdout

    # The phone is lost: only its tokens go; the tablet still reconnects.
    out = kith.cli("user", "revoke-tokens", f"alice@{DOMAIN}", "--device", PHONE[0]).stdout
    assert "1 device" in out, out
    raw, el = token_login(kith, ctx, token)
    assert sasl2_failure(el) == "not-authorized"
    raw.close()
    raw, el = token_login(kith, ctx, tablet, agent=TABLET)
    authz_id(el)
    raw.close()
    out = kith.cli("user", "tokens", f"alice@{DOMAIN}").stdout
    assert PHONE[0] not in out and TABLET[0] in out, out

    # Everything else too.
    out = kith.cli("user", "revoke-tokens", f"alice@{DOMAIN}").stdout
    assert "1 device" in out, out
    raw, el = token_login(kith, ctx, tablet, agent=TABLET)
    assert sasl2_failure(el) == "not-authorized"
    raw.close()
    assert "no login tokens" in kith.cli("user", "tokens", f"alice@{DOMAIN}").stdout
    bad = kith.cli("user", "tokens", f"nobody@{DOMAIN}", check=False)
    assert bad.returncode != 0 and "nobody" in bad.stderr


def test_fast_failures_count_against_the_rate_limit(kith_factory, test_ca):
    k = kith_factory(limits={"auth_failures_per_minute": 2})
    k.add_user("alice")
    k.start()
    ctx = test_ca.client_context()
    token, _, _ = request_token(k, ctx)
    for _ in range(2):
        raw, el = token_login(k, ctx, "0" * 96)
        assert sasl2_failure(el) == "not-authorized"
        raw.close()
    raw, el = token_login(k, ctx, token)
    assert sasl2_failure(el) == "temporary-auth-failure"
    raw.close()


def test_the_token_lifetime_is_configurable(kith_factory, test_ca):
    k = kith_factory(auth={"fast_token_days": 2})
    k.add_user("alice")
    k.start()
    _, expiry, _ = request_token(k, test_ca.client_context())
    expires = datetime.datetime.strptime(expiry, "%Y-%m-%dT%H:%M:%SZ")
    hours = (expires - datetime.datetime.utcnow()).total_seconds() / 3600
    assert 47 <= hours <= 48, expiry
