#!/usr/bin/env python3
"""Speak the first lines of XMPP to a c2s port, as a client would.

    xmpp_probe.py HOST PORT DOMAIN

Sends the client's stream header and reads up to </stream:features>. Exit status:
0 the server answered with a stream header and features offering STARTTLS as required;
1 it answered, but not like that (the answer is printed); 2 no answer yet (refused,
closed without a byte, timed out): the caller may try again.
"""
import socket
import sys
import time

host, port, domain = sys.argv[1], int(sys.argv[2]), sys.argv[3]
header = (
    f"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' "
    "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)
try:
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(header.encode())
    data = b""
    deadline = time.monotonic() + 10
    while b"</stream:features>" not in data and time.monotonic() < deadline:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
except OSError as e:
    print(f"no answer: {e}")
    sys.exit(2)
if not data:
    print("no answer: connection closed without a byte")
    sys.exit(2)
text = data.decode("utf-8", "replace")
ok = (
    "<stream:stream" in text
    and "<stream:features" in text
    and "urn:ietf:params:xml:ns:xmpp-tls" in text
    and "<required" in text
)
print(text)
sys.exit(0 if ok else 1)
