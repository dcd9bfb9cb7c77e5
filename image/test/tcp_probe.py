#!/usr/bin/env python3
"""Is a TCP port open to us? For the firewall checks, run from the test LAN's namespace.

    tcp_probe.py HOST PORT [SECONDS]

HOST may be an IPv6 address with a zone (fe80::1%veth-peer). Prints "open" and exits 0
when the connection is accepted; prints "closed (why)" and exits 1 when it is refused,
unreachable or unanswered within SECONDS (default 4: a dropped SYN is never answered).
"""
import socket
import sys

host, port = sys.argv[1], int(sys.argv[2])
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 4.0
try:
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(info[0], socket.SOCK_STREAM) as s:
        s.settimeout(seconds)
        s.connect(info[4])
    print("open")
    sys.exit(0)
except socket.timeout:
    print(f"closed (no answer in {seconds:g}s: dropped)")
except OSError as e:
    print(f"closed ({e.strerror or e})")
sys.exit(1)
