"""Logging in: every SASL mechanism, STARTTLS and Direct TLS, and the ways a login fails."""

import base64
import hashlib
import socket
import ssl
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import (DOMAIN, NS_SASL, NS_SASL_CB, NS_TLS, PASSWORD, STEP, Client, LoginFailed,
                      RawXmpp, Scram, StreamClosed, exchange, online, run, scram_login,
                      stream_error_condition, tls_server_end_point)


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
def test_alice_logs_in_with_each_mechanism_over_starttls(kith, mech):
    async def scenario():
        async with online(kith, "alice", mech=mech) as alice, online(kith, "bob") as bob:
            assert alice.mech_used == mech
            assert alice.boundjid.bare == f"alice@{DOMAIN}"
            assert alice.boundjid.resource, "the server generates a resource when none asked"
            await exchange(alice, bob)
            await exchange(bob, alice)
    run(scenario())


def test_slixmpp_without_channel_binding_is_accepted_while_plus_is_offered(kith):
    """slixmpp (Python's ssl) cannot produce tls-exporter on TLS 1.3, so it skips -PLUS and
    uses SCRAM-SHA-256 with the gs2 flag 'n' — which the server must accept."""
    async def scenario():
        async with online(kith, "alice") as alice:
            assert alice.socket.version() == "TLSv1.3"
            assert alice.mech_used == "SCRAM-SHA-256"
    run(scenario())


def test_before_tls_only_required_starttls_is_offered(kith):
    raw = RawXmpp(kith.c2s_port)
    raw.open_stream()
    feats = raw.features()
    starttls = feats.find(f"{{{NS_TLS}}}starttls")
    assert starttls is not None and starttls.find(f"{{{NS_TLS}}}required") is not None
    assert [c.tag for c in feats] == [f"{{{NS_TLS}}}starttls"], ET.tostring(feats)
    assert raw.stream_attrs.get("from") == DOMAIN
    assert raw.stream_attrs.get("id"), "the server's stream header carries an id"
    # PLAIN on the clear wire must not work.
    token = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    raw.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
    try:
        el = raw.element()
    except (StreamClosed, TimeoutError, OSError):  # closed (with a stream error) is fine too
        el = None
    assert el is None or el.tag != f"{{{NS_SASL}}}success", "PLAIN accepted without TLS"
    raw.close()


def test_after_starttls_mechanisms_and_channel_bindings_are_advertised(kith, test_ca):
    raw = RawXmpp(kith.c2s_port)
    raw.starttls(test_ca.client_context())
    assert raw.sock.version() in ("TLSv1.2", "TLSv1.3")
    mechs, feats = raw.mechanisms()
    for m in ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1", "PLAIN"):
        assert m in mechs, f"{m} not offered: {mechs}"
    assert feats.find(f"{{{NS_TLS}}}starttls") is None, "STARTTLS offered twice"
    cb = feats.find(f"{{{NS_SASL_CB}}}sasl-channel-binding")
    assert cb is not None, "XEP-0440 <sasl-channel-binding/> missing"
    types = {c.get("type") for c in cb.findall(f"{{{NS_SASL_CB}}}channel-binding")}
    assert {"tls-exporter", "tls-server-end-point"} <= types, types
    raw.close()


@pytest.mark.parametrize("mech,hash_name", [("SCRAM-SHA-256-PLUS", "sha256"),
                                            ("SCRAM-SHA-1-PLUS", "sha1")])
def test_scram_plus_with_tls_server_end_point(kith, test_ca, mech, hash_name):
    """-PLUS over STARTTLS with tls-server-end-point (RFC 5929), a binding Python can make.
    (tls-exporter is covered by the Rust interop tests.)"""
    raw = RawXmpp(kith.c2s_port)
    raw.starttls(test_ca.client_context())
    raw.mechanisms()
    scram = Scram(hash_name, "alice", PASSWORD, "tls-server-end-point",
                  tls_server_end_point(raw.sock))
    el = scram_login(raw, mech, scram)
    assert el.tag == f"{{{NS_SASL}}}success", ET.tostring(el)
    assert raw.bind("plus").startswith(f"alice@{DOMAIN}/")
    raw.close()


@pytest.mark.parametrize("mech,hash_name", [("SCRAM-SHA-256-PLUS", "sha256"),
                                            ("SCRAM-SHA-1-PLUS", "sha1")])
def test_scram_plus_with_wrong_binding_data_fails(kith, test_ca, mech, hash_name):
    raw = RawXmpp(kith.c2s_port)
    raw.starttls(test_ca.client_context())
    raw.mechanisms()
    wrong = hashlib.sha256(b"some other server's certificate").digest()
    el = scram_login(raw, mech, Scram(hash_name, "alice", PASSWORD, "tls-server-end-point", wrong))
    assert el.tag == f"{{{NS_SASL}}}failure", ET.tostring(el)
    raw.close()


def test_gs2_flag_y_is_refused_when_the_server_offers_plus(kith, test_ca):
    """RFC 5802 §6: 'y' says "I think the server can't bind"; it offers -PLUS, so this is a
    downgrade and must fail."""
    raw = RawXmpp(kith.c2s_port)
    raw.starttls(test_ca.client_context())
    raw.mechanisms()
    scram = Scram("sha256", "alice", PASSWORD, None)
    scram.gs2 = b"y,,"
    el = scram_login(raw, "SCRAM-SHA-256", scram)
    assert el.tag == f"{{{NS_SASL}}}failure", ET.tostring(el)
    raw.close()


def test_direct_tls_login_with_alpn(kith, test_ca):
    """XEP-0368: TLS from the first byte on c2s_tls, ALPN xmpp-client, no STARTTLS offered."""
    ctx = test_ca.client_context()
    ctx.set_alpn_protocols(["xmpp-client"])
    raw = RawXmpp(kith.c2s_tls_port, direct_tls=ctx)
    assert raw.sock.selected_alpn_protocol() == "xmpp-client"
    mechs, feats = raw.mechanisms()
    assert feats.find(f"{{{NS_TLS}}}starttls") is None
    assert "SCRAM-SHA-256-PLUS" in mechs
    raw.close()

    async def scenario():
        async with online(kith, "alice", direct_tls=True) as alice, online(kith, "bob") as bob:
            assert alice.socket.version() in ("TLSv1.2", "TLSv1.3")
            await exchange(bob, alice)
            await exchange(alice, bob)
    run(scenario())


def test_tls_1_2_clients_are_served_too(kith, test_ca):
    """Older phones speak TLS 1.2 only; the server takes 1.2 and 1.3."""
    ctx = test_ca.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    raw = RawXmpp(kith.c2s_tls_port, direct_tls=ctx)
    assert raw.sock.version() == "TLSv1.2"
    mechs, _ = raw.mechanisms()
    assert "SCRAM-SHA-256-PLUS" in mechs
    scram = Scram("sha256", "alice", PASSWORD, "tls-server-end-point", tls_server_end_point(raw.sock))
    el = scram_login(raw, "SCRAM-SHA-256-PLUS", scram)
    assert el.tag == f"{{{NS_SASL}}}success", ET.tostring(el)
    raw.close()


@pytest.mark.parametrize("user,password", [("alice", "not her password"),
                                           ("mallory", PASSWORD)])
def test_wrong_password_and_unknown_user_are_not_authorized(kith, user, password):
    async def scenario():
        c = Client(kith, f"{user}@{DOMAIN}", password, mech="SCRAM-SHA-256")
        with pytest.raises(LoginFailed) as failed:
            await c.login()
        c.abort()
        assert failed.value.what == "failed_auth"
        assert failed.value.condition == "not-authorized"
    run(scenario())


def test_plain_with_wrong_password_is_not_authorized(kith, test_ca):
    raw = RawXmpp(kith.c2s_port)
    raw.starttls(test_ca.client_context())
    raw.mechanisms()
    el = raw.auth_plain("alice", "wrong")
    assert el.tag == f"{{{NS_SASL}}}failure"
    assert el.find(f"{{{NS_SASL}}}not-authorized") is not None, ET.tostring(el)
    raw.close()


def test_repeated_failures_are_rate_limited(kith_factory, test_ca):
    """After `auth_failures_per_minute` failures, even the right password is refused."""
    k = kith_factory(limits={"auth_failures_per_minute": 3})
    k.add_user("alice")
    k.start()
    ctx = test_ca.client_context()
    for _ in range(3):
        raw = RawXmpp(k.c2s_port)
        raw.starttls(ctx)
        raw.mechanisms()
        assert raw.auth_plain("alice", "guess").tag == f"{{{NS_SASL}}}failure"
        raw.close()
    raw = RawXmpp(k.c2s_port)
    try:
        raw.starttls(ctx)
        raw.mechanisms()
        el = raw.auth_plain("alice", PASSWORD)
    except (StreamClosed, TimeoutError, OSError):  # refusing or closing is a limit too
        el = None
    finally:
        raw.close()
    assert el is None or el.tag != f"{{{NS_SASL}}}success", \
        "4th attempt within a minute was let in"


def test_default_self_signed_certificate_is_generated_and_served(kith_factory):
    k = kith_factory(tls_files=False)
    k.add_user("alice")
    k.start()
    cert_path = k.data_dir / "tls" / "cert.pem"
    assert cert_path.exists(), "no self-signed certificate in data_dir/tls/cert.pem"
    assert (k.data_dir / "tls" / "key.pem").exists()
    ctx = ssl.create_default_context(cafile=str(cert_path))
    ctx.check_hostname = False  # the self-signed cert is its own anchor; names checked below
    ctx.verify_mode = ssl.CERT_NONE
    raw = RawXmpp(k.c2s_port)
    raw.starttls(ctx)
    served = raw.sock.getpeercert(binary_form=True)
    first_pem = cert_path.read_text().split("-----END CERTIFICATE-----")[0]
    assert ssl.PEM_cert_to_DER_cert(first_pem + "-----END CERTIFICATE-----\n") == served
    raw.close()


def test_bind_returns_requested_resource_and_session_is_optional(kith, test_ca):
    raw = RawXmpp(kith.c2s_port)
    jid = raw.login(test_ca.client_context(), "alice", "kitchen")
    assert jid == f"alice@{DOMAIN}/kitchen"
    # RFC 6121 legacy <session/>: if offered it must be optional, and it must not fail.
    raw.send("<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
    iq = raw.element()
    assert iq.get("id") == "s1" and iq.get("type") == "result", ET.tostring(iq)
    raw.close()


def test_whitespace_keepalive_is_accepted(kith, test_ca):
    raw = RawXmpp(kith.c2s_port)
    raw.login(test_ca.client_context(), "alice", "ws")
    for _ in range(3):
        raw.send(" ")
        time.sleep(0.1)
    raw.send(f"<iq type='get' id='p1' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
    iq = raw.element()
    assert iq.get("id") == "p1" and iq.get("type") == "result", ET.tostring(iq)
    raw.close()


def test_wrong_host_in_stream_header_is_host_unknown(kith):
    raw = RawXmpp(kith.c2s_port)
    raw.open_stream(to="elsewhere.example")
    raw.read_until_closed(STEP)
    assert stream_error_condition(raw.raw) == "host-unknown", raw.raw[-400:]


def test_wrong_stream_namespace_is_invalid_namespace(kith):
    raw = RawXmpp(kith.c2s_port)
    raw.send(f"<?xml version='1.0'?><stream:stream to='{DOMAIN}' version='1.0' "
             f"xmlns='jabber:client' xmlns:stream='urn:example:not-streams'>")
    raw.read_until_closed(STEP)
    assert stream_error_condition(raw.raw) == "invalid-namespace", raw.raw[-400:]



@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_1_1_is_refused(kith):
    """The client really offers TLS 1.1 (a 0x0302 ClientHello); the server must refuse."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError) as e:
        pytest.skip(f"this OpenSSL cannot offer TLS 1.1: {e}")
    with socket.create_connection(("127.0.0.1", kith.c2s_tls_port), timeout=STEP) as s:
        try:
            with ctx.wrap_socket(s, server_hostname=DOMAIN) as tls:
                pytest.fail(f"TLS 1.1 handshake succeeded ({tls.version()})")
        except ssl.SSLError as e:
            if "NO_PROTOCOLS_AVAILABLE" in str(e) or "no protocols available" in str(e):
                pytest.skip("this OpenSSL cannot offer TLS 1.1")
            # refused by the server: a protocol_version alert (or any handshake failure)
        except (ConnectionResetError, BrokenPipeError):
            pass


def test_failed_logins_are_limited_per_account_across_addresses(kith_factory, test_ca):
    """Someone guessing alice's password from many addresses is stopped too."""
    k = kith_factory(limits={"auth_failures_per_minute": 3})
    k.add_user("alice")
    k.start()
    ctx = test_ca.client_context()
    for i in range(3):
        raw = RawXmpp(k.c2s_port, source=f"127.0.0.{10 + i}")
        raw.starttls(ctx)
        raw.mechanisms()
        assert raw.auth_plain("alice", "guess").tag == f"{{{NS_SASL}}}failure"
        raw.close()
    raw = RawXmpp(k.c2s_port, source="127.0.0.20")
    try:
        raw.starttls(ctx)
        raw.mechanisms()
        el = raw.auth_plain("alice", PASSWORD)
    except (StreamClosed, TimeoutError, OSError):
        el = None
    finally:
        raw.close()
    assert el is None or el.tag != f"{{{NS_SASL}}}success", \
        "alice's account let a 4th attempt in within a minute from a new address"


def test_scram_iteration_count_follows_config_and_never_drops_below_4096(kith_factory, test_ca):
    k = kith_factory(auth={"scram_iterations": 10_000})
    k.add_user("alice")
    k.start()
    raw = RawXmpp(k.c2s_port)
    raw.starttls(test_ca.client_context())
    raw.mechanisms()
    scram = Scram("sha256", "alice", PASSWORD, None)
    el = scram_login(raw, "SCRAM-SHA-256", scram)
    raw.close()
    assert el.tag == f"{{{NS_SASL}}}success", ET.tostring(el)
    assert scram.iterations == 10_000, scram.iterations

    low = kith_factory("low", auth={"scram_iterations": 1000})
    res = low.cli("user", "add", f"bob@{DOMAIN}", stdin="pw\n", check=False)
    if res.returncode == 0:  # accepted the config: then it must still hash with >= 4096
        low.start()
        raw = RawXmpp(low.c2s_port)
        raw.starttls(test_ca.client_context())
        raw.mechanisms()
        scram = Scram("sha256", "bob", "pw", None)
        scram_login(raw, "SCRAM-SHA-256", scram)
        raw.close()
        assert scram.iterations >= 4096, f"stored with {scram.iterations} iterations"
