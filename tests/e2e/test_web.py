"""The web pod: HTTPS with security headers, the plain-HTTP redirect, XEP-0156
discovery (WebSocket and BOSH), and XMPP over WebSocket (RFC 7395) talking to slixmpp
users."""

import asyncio
import http.client
import json
import xml.etree.ElementTree as ET

import pytest
import websockets

from conftest import (DOMAIN, NS_CLIENT, NS_FRAMING, NS_SASL, NS_STREAM, NS_STREAMS_ERR,
                      STEP, WsXmpp, online, run)

NS_XRD = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
REL_WS = "urn:xmpp:alt-connections:websocket"
REL_BOSH = "urn:xmpp:alt-connections:xbosh"


def https_get(server, path: str, headers: dict | None = None):
    conn = http.client.HTTPSConnection(DOMAIN, server.https_port, timeout=STEP,
                                       context=server.https_context())
    conn.connect = _loopback_connect(conn)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


def _loopback_connect(conn):
    """Connect to 127.0.0.1 while TLS still checks the certificate for DOMAIN."""
    import socket

    def connect():
        sock = socket.create_connection(("127.0.0.1", conn.port), conn.timeout)
        conn.sock = conn._context.wrap_socket(sock, server_hostname=DOMAIN)
    return connect


def test_https_answers_with_security_headers_and_host_meta(web_kith):
    resp, body = https_get(web_kith, "/.well-known/host-meta")
    assert resp.status == 200
    assert resp.getheader("Content-Type").startswith("application/xrd+xml")
    assert resp.getheader("Strict-Transport-Security").startswith("max-age=")
    assert "default-src 'self'" in resp.getheader("Content-Security-Policy")
    assert resp.getheader("X-Content-Type-Options") == "nosniff"
    assert resp.getheader("Referrer-Policy") == "no-referrer"
    assert resp.getheader("Access-Control-Allow-Origin") == "*"
    xrd = ET.fromstring(body)
    links = {l.get("rel"): l.get("href") for l in xrd.iter(f"{{{NS_XRD}}}Link")}
    assert links[REL_WS] == f"wss://{DOMAIN}:{web_kith.https_port}/xmpp-websocket"
    assert links[REL_BOSH] == f"https://{DOMAIN}:{web_kith.https_port}/http-bind"

    resp, body = https_get(web_kith, "/.well-known/host-meta.json")
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "application/json"
    links = {l["rel"]: l["href"] for l in json.loads(body)["links"]}
    assert links[REL_WS] == f"wss://{DOMAIN}:{web_kith.https_port}/xmpp-websocket"
    assert links[REL_BOSH] == f"https://{DOMAIN}:{web_kith.https_port}/http-bind"

    resp, _ = https_get(web_kith, "/no/such/page")
    assert resp.status == 404
    assert resp.getheader("X-Content-Type-Options") == "nosniff"


def test_a_forged_host_header_is_never_reflected(web_kith):
    resp, body = https_get(web_kith, "/.well-known/host-meta.json",
                           {"Host": "evil.example\"><script>"})
    assert resp.status in (200, 400)
    if resp.status == 200:
        assert b"evil" not in body and b"script" not in body


def test_plain_http_redirects_to_https_except_acme_challenges(web_kith):
    conn = http.client.HTTPConnection("127.0.0.1", web_kith.http_port, timeout=STEP)
    conn.request("GET", "/some/page?x=1", headers={"Host": f"{DOMAIN}:{web_kith.http_port}"})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 308
    assert resp.getheader("Location") == f"https://{DOMAIN}:{web_kith.https_port}/some/page?x=1"
    assert resp.getheader("Strict-Transport-Security") is None  # HSTS only over HTTPS
    assert resp.getheader("X-Content-Type-Options") == "nosniff"
    conn.request("GET", "/.well-known/acme-challenge/sometoken")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 404  # reserved for HTTP-01, not redirected
    conn.close()


def test_websocket_user_chats_with_a_slixmpp_user(web_kith):
    async def scenario():
        ws = await WsXmpp.connect(web_kith)
        assert ws.ws.subprotocol == "xmpp"
        jid = await ws.login("alice")
        assert jid == f"alice@{DOMAIN}/web"
        async with online(web_kith, "bob") as bob:
            # An IQ to the server is answered through the same session engine.
            await ws.send(f"<iq xmlns='{NS_CLIENT}' type='get' id='p1' to='{DOMAIN}'>"
                          "<ping xmlns='urn:xmpp:ping'/></iq>")
            pong = await ws.next_stanza("iq")
            assert pong.get("id") == "p1" and pong.get("type") == "result"
            await ws.send(f"<presence xmlns='{NS_CLIENT}'/>")
            bob.send_message(mto=jid, mbody="dinner at eight?", mtype="chat")
            msg = await ws.next_stanza("message")
            assert msg.get("from").startswith(f"bob@{DOMAIN}/")
            assert msg.find(f"{{{NS_CLIENT}}}body").text == "dinner at eight?"

            await ws.send(f"<message xmlns='{NS_CLIENT}' to='bob@{DOMAIN}' type='chat'>"
                          "<body>yes, bringing cake</body></message>")
            got = await bob.next_message()
            assert got["body"] == "yes, bringing cake"
            assert str(got["from"]) == jid

            # RFC 7395 §3.6: <close/> is answered with <close/>.
            await ws.send(f"<close xmlns='{NS_FRAMING}'/>")
            el = await ws.recv()
            while el.tag != f"{{{NS_FRAMING}}}close":
                el = await ws.recv()
        await ws.close()
    run(scenario())


def test_websocket_wrong_password_is_refused(web_kith):
    async def scenario():
        ws = await WsXmpp.connect(web_kith)
        try:
            await ws.open()
            token = "AGFsaWNlAG5vcGU="  # \0alice\0nope
            await ws.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
            fail = await ws.recv()
            assert fail.tag == f"{{{NS_SASL}}}failure"
            assert fail.find(f"{{{NS_SASL}}}not-authorized") is not None
        finally:
            await ws.close()
    run(scenario())


def test_websocket_without_the_xmpp_subprotocol_is_refused(web_kith):
    async def scenario():
        with pytest.raises(websockets.InvalidStatus) as e:
            await WsXmpp.connect(web_kith, subprotocols=())
        assert e.value.response.status_code == 400
    run(scenario())


def test_a_websocket_message_over_the_stanza_limit_closes_only_that_connection(web_kith):
    async def scenario():
        ws = await WsXmpp.connect(web_kith, max_size=None)
        await ws.login("alice")
        huge = "x" * (300 * 1024)  # over the 256 KiB stanza limit
        with pytest.raises(websockets.ConnectionClosed):
            await ws.send(f"<message xmlns='{NS_CLIENT}' to='bob@{DOMAIN}'><body>{huge}"
                          "</body></message>")
            while True:
                await ws.recv()
        assert web_kith.alive()
        other = await WsXmpp.connect(web_kith)
        assert await other.login("carol") == f"carol@{DOMAIN}/web"
        await other.close()
    run(scenario())


def test_a_stream_error_reaches_the_websocket_client(web_kith):
    async def scenario():
        ws = await WsXmpp.connect(web_kith)
        try:
            await ws.send(f"<open xmlns='{NS_FRAMING}' to='elsewhere.example' version='1.0'/>")
            assert (await ws.recv()).tag == f"{{{NS_FRAMING}}}open"
            err = await ws.recv()
            assert err.tag == f"{{{NS_STREAM}}}error"
            assert err.find(f"{{{NS_STREAMS_ERR}}}host-unknown") is not None
            assert (await ws.recv()).tag == f"{{{NS_FRAMING}}}close"
        finally:
            await ws.close()
    run(scenario())


def test_a_websocket_message_that_is_not_one_element_is_not_well_formed(web_kith):
    async def scenario():
        ws = await WsXmpp.connect(web_kith)
        try:
            await ws.login("alice")
            await ws.send(f"<message xmlns='{NS_CLIENT}' to='bob@{DOMAIN}'><body>half")
            el = await ws.recv()
            while el.tag != f"{{{NS_STREAM}}}error":
                el = await ws.recv()
            assert el.find(f"{{{NS_STREAMS_ERR}}}not-well-formed") is not None
            assert (await ws.recv()).tag == f"{{{NS_FRAMING}}}close"
        finally:
            await ws.close()
    run(scenario())
