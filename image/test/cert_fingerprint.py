#!/usr/bin/env python3
"""Print the SHA-256 fingerprint of the certificate a c2s port presents after STARTTLS.

    cert_fingerprint.py HOST PORT DOMAIN

The power-cut test compares it before and after a cut: the certificate lives on the data
partition, so a box that reboots must present the same one. Exit status 0 with the
fingerprint on stdout; 1 when the server did not get as far as TLS (the reason printed).
"""
import hashlib
import socket
import ssl
import sys
import time

host, port, domain = sys.argv[1], int(sys.argv[2]), sys.argv[3]
header = (
    f"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' "
    "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)


def read_until(s, marker, seconds):
    data = b""
    deadline = time.monotonic() + seconds
    while marker not in data and time.monotonic() < deadline:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


try:
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(header.encode())
    if b"</stream:features>" not in read_until(s, b"</stream:features>", 15):
        sys.exit("no stream features")
    s.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    if b"<proceed" not in read_until(s, b"<proceed", 15):
        sys.exit("no <proceed/> to STARTTLS")
    s.settimeout(30)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # a self-signed certificate: only its identity is compared
    tls = ctx.wrap_socket(s, server_hostname=domain)
    der = tls.getpeercert(binary_form=True)
    tls.close()
except OSError as e:
    sys.exit(f"no TLS: {e}")
if not der:
    sys.exit("no certificate presented")
print(hashlib.sha256(der).hexdigest())
