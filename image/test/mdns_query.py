#!/usr/bin/env python3
"""Resolve NAME.local by multicast DNS on one interface, as a LAN client would.

    mdns_query.py NAME IFACE [TIMEOUT_SECONDS]

Sends one-shot ("legacy unicast", RFC 6762 §6.7) A and AAAA queries to 224.0.0.251 and
ff02::fb port 5353 out of IFACE, repeats every second, and prints the addresses answered.
Exit 0 when an answer for NAME came, 1 otherwise.
"""
import select
import socket
import struct
import sys
import time

name, iface = sys.argv[1], sys.argv[2]
timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
ifindex = socket.if_nametoindex(iface)


def query(qtype, qid):
    q = struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack("!HH", qtype, 1)


def skip_name(msg, i):
    while True:
        n = msg[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += 1 + n


def read_name(msg, i):
    labels, jumps = [], 0
    while True:
        n = msg[i]
        if n == 0:
            return ".".join(labels)
        if n & 0xC0 == 0xC0:
            i = ((n & 0x3F) << 8) | msg[i + 1]
            jumps += 1
            if jumps > 20:
                return ""
            continue
        labels.append(msg[i + 1 : i + 1 + n].decode("utf-8", "replace"))
        i += 1 + n


def records(msg):
    """Every resource record of a reply, as (name, type, data)."""
    _, _, qd, an, ns, ar = struct.unpack("!HHHHHH", msg[:12])
    i = 12
    for _ in range(qd):
        i = skip_name(msg, i) + 4
    for _ in range(an + ns + ar):
        rname = read_name(msg, i)
        i = skip_name(msg, i)
        rtype, _, _, rdlen = struct.unpack("!HHIH", msg[i : i + 10])
        i += 10
        yield rname, rtype, msg[i : i + rdlen]
        i += rdlen


def answers(msg):
    out = []
    for rname, rtype, rdata in records(msg):
        if rname.lower().rstrip(".") == name.lower().rstrip("."):
            if rtype == 1 and len(rdata) == 4:
                out.append(socket.inet_ntop(socket.AF_INET, rdata))
            elif rtype == 28 and len(rdata) == 16:
                out.append(socket.inet_ntop(socket.AF_INET6, rdata))
    return out


socks = []
s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s4.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
s4.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
s4.bind(("0.0.0.0", 0))
socks.append((s4, ("224.0.0.251", 5353)))
try:
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s6.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
    s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    s6.bind(("::", 0))
    socks.append((s6, ("ff02::fb", 5353, 0, ifindex)))
except OSError as e:
    print(f"(no IPv6 query: {e})")

found = set()
heard = []  # (source, names answered) of every packet, for the failure message
deadline = time.monotonic() + timeout
qid = 0x4B00
while time.monotonic() < deadline and not found:
    for s, dst in socks:
        for qtype in (1, 28):
            try:
                s.sendto(query(qtype, qid), dst)
            except OSError as e:
                print(f"(send on {dst[0]} failed: {e})")
    qid += 1
    until = min(deadline, time.monotonic() + 1.0)
    while time.monotonic() < until:
        r, _, _ = select.select([s for s, _ in socks], [], [], max(0, until - time.monotonic()))
        for s in r:
            msg, src = s.recvfrom(9000)
            try:
                if len(heard) < 20:
                    # The names of every record: a renamed host shows up here.
                    heard.append((src[0], sorted({r[0] for r in records(msg)})))
                for a in answers(msg):
                    if a not in found:
                        print(f"{name} -> {a} (answered by {src[0]})")
                        found.add(a)
            except (IndexError, struct.error):
                pass
if not found:
    print(f"{name}: no mDNS answer on {iface} within {timeout:.0f}s")
    print(f"heard {len(heard)} packets: {heard}" if heard else "heard no packet at all")
sys.exit(0 if found else 1)
