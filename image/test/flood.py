#!/usr/bin/env python3
"""The power-cut test's XMPP client (image/powercut-test.sh): a message flood whose
acknowledgements are written down, and the check after the box comes back.

    flood.py send  HOST PORT RUN LOGFILE   alice writes to bob until the connection dies
    flood.py check HOST PORT RUN LOGFILE   every acknowledged message is in the archive

`send` logs in as alice@kith.local (STARTTLS, the box's self-signed certificate, SASL
PLAIN), enables stream management (XEP-0198) and sends "flood RUN N" messages to bob, who
is offline (so each is archived for both and kept for bob's next login). After every 10
messages it asks for an acknowledgement; each <a h='…'/> means the server has taken
responsibility for the first h messages, and is appended to LOGFILE ("acked H") and
fsynced — what the box acknowledged before the cut is on the host's disk. It stops when
the connection dies (the power cut) or after 20 000 messages.

`check` reads alice's archive with bob (XEP-0313, paged) and prints one line:
"sent=S acked=A archived=K lost_acked=L lost_unacked=U"; exit 1 if L > 0 (an acknowledged
message lost).
"""
import base64
import os
import socket
import ssl
import sys
import time
import xml.etree.ElementTree as ET

DOMAIN = "kith.local"
PASSWORD = "powercut-test"
NS_STREAM = "http://etherx.jabber.org/streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_CLIENT = "jabber:client"
NS_SM = "urn:xmpp:sm:3"
NS_MAM = "urn:xmpp:mam:2"
NS_FWD = "urn:xmpp:forward:0"
NS_RSM = "http://jabber.org/protocol/rsm"


class Xmpp:
    """A blocking XMPP connection, every read bounded by a timeout."""

    def __init__(self, host: str, port: int, timeout: float = 30):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.pending: list[ET.Element] = []
        self.new_parser()

    def new_parser(self):
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0

    def send(self, data: str):
        self.sock.sendall(data.encode())

    def open_stream(self):
        self.new_parser()
        self.send(f"<?xml version='1.0'?><stream:stream to='{DOMAIN}' version='1.0' "
                  f"xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAM}'>")

    def element(self) -> ET.Element:
        deadline = time.monotonic() + self.timeout
        while not self.pending:
            if time.monotonic() > deadline:
                raise TimeoutError("no element from the server")
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self.parser.feed(data)
            for event, el in self.parser.read_events():
                if event == "start":
                    self.depth += 1
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        self.pending.append(el)
        return self.pending.pop(0)

    def expect(self, tag: str) -> ET.Element:
        el = self.element()
        if el.tag != tag:
            raise RuntimeError(f"expected {tag}, got {ET.tostring(el)[:300]!r}")
        return el

    def login(self, user: str):
        self.open_stream()
        self.expect(f"{{{NS_STREAM}}}features")
        self.send(f"<starttls xmlns='{NS_TLS}'/>")
        self.expect(f"{{{NS_TLS}}}proceed")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the box's certificate is self-signed
        self.sock = ctx.wrap_socket(self.sock, server_hostname=DOMAIN)
        self.open_stream()
        self.expect(f"{{{NS_STREAM}}}features")
        token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
        self.expect(f"{{{NS_SASL}}}success")
        self.open_stream()
        self.expect(f"{{{NS_STREAM}}}features")
        self.send(f"<iq type='set' id='bind1'><bind xmlns='{NS_BIND}'>"
                  f"<resource>powercut</resource></bind></iq>")
        iq = self.expect(f"{{{NS_CLIENT}}}iq")
        if iq.get("type") != "result":
            raise RuntimeError(f"bind failed: {ET.tostring(iq)!r}")


def send(host, port, run, logfile):
    x = Xmpp(host, port)
    x.login("alice")
    x.send(f"<enable xmlns='{NS_SM}'/>")
    x.expect(f"{{{NS_SM}}}enabled")
    log = open(logfile, "a")
    sent = 0
    try:
        while sent < 20000:
            for _ in range(10):
                sent += 1
                x.send(f"<message type='chat' to='bob@{DOMAIN}' id='f{sent}'>"
                       f"<body>flood {run} {sent}</body></message>")
            log.write(f"sent {sent}\n")
            x.send(f"<r xmlns='{NS_SM}'/>")
            while True:
                el = x.element()
                if el.tag == f"{{{NS_SM}}}a":
                    log.write(f"acked {int(el.get('h'))}\n")
                    log.flush()
                    os.fsync(log.fileno())
                    break
    except (OSError, ConnectionError, TimeoutError, ssl.SSLError) as e:
        log.write(f"end {type(e).__name__}\n")
    log.flush()
    os.fsync(log.fileno())
    print(f"flood: sent {sent}")


def check(host, port, run, logfile):
    sent = acked = 0
    for line in open(logfile):
        k, _, v = line.partition(" ")
        if k == "sent":
            sent = max(sent, int(v))
        elif k == "acked":
            acked = max(acked, int(v))
    x = Xmpp(host, port)
    x.login("alice")
    seen: set[int] = set()
    after = ""
    for page in range(1000):
        rsm = f"<max>250</max>" + (f"<after>{after}</after>" if after else "")
        x.send(f"<iq type='set' id='q{page}'><query xmlns='{NS_MAM}' queryid='p{page}'>"
               f"<x xmlns='jabber:x:data' type='submit'>"
               f"<field var='FORM_TYPE' type='hidden'><value>{NS_MAM}</value></field>"
               f"<field var='with'><value>bob@{DOMAIN}</value></field></x>"
               f"<set xmlns='{NS_RSM}'>{rsm}</set></query></iq>")
        while True:
            el = x.element()
            if el.tag == f"{{{NS_CLIENT}}}message":
                body = el.findtext(f".//{{{NS_FWD}}}forwarded/{{{NS_CLIENT}}}message/"
                                   f"{{{NS_CLIENT}}}body")
                parts = (body or "").split()
                if len(parts) == 3 and parts[0] == "flood" and parts[1] == run:
                    seen.add(int(parts[2]))
            elif el.tag == f"{{{NS_CLIENT}}}iq":
                if el.get("type") != "result":
                    raise RuntimeError(f"MAM query failed: {ET.tostring(el)[:300]!r}")
                fin = el.find(f"{{{NS_MAM}}}fin")
                break
        last = fin.findtext(f"{{{NS_RSM}}}set/{{{NS_RSM}}}last") if fin is not None else None
        if fin is None or fin.get("complete") == "true" or not last:
            break
        after = last
    lost_acked = sum(1 for n in range(1, acked + 1) if n not in seen)
    lost_unacked = sum(1 for n in range(acked + 1, sent + 1) if n not in seen)
    print(f"sent={sent} acked={acked} archived={len(seen)} lost_acked={lost_acked} "
          f"lost_unacked={lost_unacked}")
    sys.exit(1 if lost_acked else 0)


if __name__ == "__main__":
    cmd, host, port, run, logfile = sys.argv[1:6]
    {"send": send, "check": check}[cmd](host, int(port), run, logfile)
