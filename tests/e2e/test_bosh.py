"""BOSH (XEP-0124) with XMPP (XEP-0206) at /http-bind: a BOSH client logs in with the
same engine as TCP and chats with slixmpp; sessions are bounded and floods refused."""

import base64
import http.client
import socket
import xml.etree.ElementTree as ET

from conftest import (DOMAIN, NS_BIND, NS_CLIENT, NS_SASL, NS_STREAM, PASSWORD, STEP,
                      WsXmpp, online, run)

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"


class Bosh:
    """A BOSH client by hand over HTTPS: every request bounded by the BOSH wait + STEP."""

    def __init__(self, server, wait: int = 5):
        self.server = server
        self.wait = wait
        self.rid = 1000
        self.sid = None

    def post(self, body: str) -> ET.Element:
        conn = http.client.HTTPSConnection(DOMAIN, self.server.https_port,
                                           timeout=self.wait + STEP,
                                           context=self.server.https_context())
        sock = socket.create_connection(("127.0.0.1", self.server.https_port), conn.timeout)
        conn.sock = self.server.https_context().wrap_socket(sock, server_hostname=DOMAIN)
        conn.request("POST", "/http-bind", body=body.encode(),
                     headers={"Content-Type": "text/xml; charset=utf-8"})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        assert resp.status == 200, (resp.status, data)
        assert resp.getheader("Access-Control-Allow-Origin") == "*"
        return ET.fromstring(data)

    def request(self, children: str = "", **attrs) -> ET.Element:
        self.rid += 1
        a = " ".join(f"{k}='{v}'" for k, v in attrs.items())
        return self.post(f"<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' "
                         f"rid='{self.rid}' sid='{self.sid}' {a}>{children}</body>")

    def create(self) -> ET.Element:
        self.rid += 1
        body = self.post(f"<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' "
                         f"content='text/xml; charset=utf-8' hold='1' rid='{self.rid}' "
                         f"to='{DOMAIN}' ver='1.6' wait='{self.wait}' xml:lang='en' "
                         "xmpp:version='1.0'/>")
        self.sid = body.get("sid")
        return body

    def until(self, tag: str, ns: str = NS_CLIENT, first: ET.Element | None = None):
        """Poll until an element `tag` arrives; returns it."""
        body = first if first is not None else self.request()
        for _ in range(20):
            for child in body:
                if child.tag == f"{{{ns}}}{tag}":
                    return child
            assert body.get("type") != "terminate", ET.tostring(body)
            body = self.request()
        raise AssertionError(f"no <{tag}/> over BOSH")

    def login(self, user: str) -> str:
        created = self.create()
        assert created.get("sid") and created.get("requests") == "2"
        assert int(created.get("wait")) <= 60
        features = self.until("features", NS_STREAM, created)
        assert "PLAIN" in [m.text for m in features.iter(f"{{{NS_SASL}}}mechanism")]
        token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
        body = self.request(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
        self.until("success", NS_SASL, body)
        body = self.request(**{"xmpp:restart": "true", "to": DOMAIN})
        features = self.until("features", NS_STREAM, body)
        assert features.find(f"{{{NS_BIND}}}bind") is not None
        body = self.request(f"<iq xmlns='{NS_CLIENT}' type='set' id='b1'><bind "
                            f"xmlns='{NS_BIND}'><resource>bosh</resource></bind></iq>")
        iq = self.until("iq", NS_CLIENT, body)
        return iq.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid").text


def test_a_bosh_client_logs_in_and_chats_with_slixmpp(web_kith):
    b = Bosh(web_kith)
    jid = b.login("alice")
    assert jid == f"alice@{DOMAIN}/bosh"
    b.request(f"<presence xmlns='{NS_CLIENT}'/>")

    async def scenario():
        async with online(web_kith, "bob") as bob:
            bob.send_message(mto=jid, mbody="over BOSH?", mtype="chat")
            import asyncio
            msg = await asyncio.to_thread(b.until, "message")
            assert msg.find(f"{{{NS_CLIENT}}}body").text == "over BOSH?"
            await asyncio.to_thread(
                b.request, f"<message xmlns='{NS_CLIENT}' to='bob@{DOMAIN}' type='chat'>"
                "<body>yes, long-polling</body></message>")
            got = await bob.next_message()
            assert got["body"] == "yes, long-polling"
    run(scenario())
    end = b.request(type="terminate")
    assert end.get("type") == "terminate"
    # The session is gone: its sid is unknown now.
    gone = b.request()
    assert gone.get("type") == "terminate" and gone.get("condition") == "item-not-found"


def test_bad_bosh_requests_get_bosh_errors(web_kith):
    b = Bosh(web_kith)
    assert b.post("<not-xml").get("condition") == "bad-request"
    assert b.post(f"<body xmlns='{NS_HTTPBIND}' rid='x'/>").get("condition") == "bad-request"
    unknown = b.post(f"<body xmlns='{NS_HTTPBIND}' rid='5' sid='nope'/>")
    assert unknown.get("condition") == "item-not-found"
    other = b.post(f"<body xmlns='{NS_HTTPBIND}' rid='5' to='elsewhere.example' wait='5'/>")
    assert other.get("condition") == "host-unknown"
    b.create()
    # A retried request (same rid, e.g. after a network error) gets the same answer.
    wrong = base64.b64encode(b"\0alice\0wrong").decode()
    auth = f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{wrong}</auth>"
    first = b.request(auth)
    assert first.find(f"{{{NS_SASL}}}failure") is not None, ET.tostring(first)
    b.rid -= 1
    assert ET.tostring(b.request(auth)) == ET.tostring(first)
    b.rid += 5  # a rid outside the window ends the session
    assert b.request().get("condition") == "item-not-found"


def test_a_bosh_session_flood_is_refused_and_others_still_get_in(web_kith):
    sessions = []
    refused = 0
    for _ in range(40):
        b = Bosh(web_kith, wait=1)
        body = b.create()
        if body.get("type") == "terminate":
            assert body.get("condition") == "policy-violation"
            refused += 1
        else:
            sessions.append(b)
    assert len(sessions) == 16 and refused == 24
    assert web_kith.alive()

    async def scenario():
        ws = await WsXmpp.connect(web_kith)
        assert await ws.login("carol") == f"carol@{DOMAIN}/web"
        await ws.close()
    run(scenario())
    for b in sessions:
        b.request(type="terminate")
    # Their slots are free again.
    assert Bosh(web_kith).login("bob") == f"bob@{DOMAIN}/bosh"
