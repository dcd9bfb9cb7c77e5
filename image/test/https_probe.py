#!/usr/bin/env python3
"""HTTPS GET / on HOST:PORT with SNI DOMAIN, accepting the box's self-signed certificate.

    https_probe.py HOST PORT DOMAIN

Exit 0 and print the status line and certificate subject when an HTTP response came back
over TLS; 1 when TLS or HTTP went wrong; 2 when nothing answered (may retry).
"""
import socket
import ssl
import sys

host, port, domain = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
try:
    raw = socket.create_connection((host, port), timeout=5)
except OSError as e:
    print(f"no answer: {e}")
    sys.exit(2)
try:
    with ctx.wrap_socket(raw, server_hostname=domain) as s:
        s.settimeout(10)
        s.sendall(f"GET / HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        cert = s.getpeercert(binary_form=True)
        print(f"TLS {s.version()}, certificate {len(cert or b'')} bytes")
except (OSError, ssl.SSLError) as e:
    print(f"TLS/HTTP failed: {e}")
    sys.exit(1)
line = data.split(b"\r\n", 1)[0].decode("latin-1")
print(line)
sys.exit(0 if line.startswith("HTTP/1.") else 1)
