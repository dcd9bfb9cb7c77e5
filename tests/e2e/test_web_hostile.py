"""Hostile HTTP input against the web pod: oversized headers, slowloris, garbage and
connection floods. The server stays up, bounded, and keeps answering the household."""

import contextlib
import socket
import ssl
import time

from conftest import DOMAIN, STEP, WsXmpp, run


def legit_get(server) -> int:
    """A normal client's request still works."""
    resp = server.https_raw(f"GET /.well-known/host-meta HTTP/1.1\r\nHost: {DOMAIN}\r\n"
                            "Connection: close\r\n\r\n".encode())
    return int(resp.split(b" ", 2)[1]) if resp.startswith(b"HTTP/1.1 ") else 0


def test_oversized_request_headers_get_431(web_kith):
    big = "X-Junk: " + "a" * (64 * 1024) + "\r\n"
    resp = web_kith.https_raw(f"GET / HTTP/1.1\r\nHost: {DOMAIN}\r\n{big}\r\n".encode())
    assert resp.startswith(b"HTTP/1.1 431"), resp[:100]
    many = "".join(f"X-H{i}: v\r\n" for i in range(2000))
    resp = web_kith.https_raw(f"GET / HTTP/1.1\r\nHost: {DOMAIN}\r\n{many}\r\n".encode())
    assert resp.startswith(b"HTTP/1.1 431") or resp == b"", resp[:100]
    assert legit_get(web_kith) == 200


def test_garbage_gets_400_and_nothing_else(web_kith):
    for junk in (b"\x00\x01\x02 garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                 b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n"):
        resp = web_kith.https_raw(junk)
        assert resp == b"" or resp.split(b" ", 2)[1][:1] in (b"4", b"5"), resp[:100]
    assert legit_get(web_kith) == 200
    assert web_kith.alive()


def test_slowloris_connections_are_closed_and_do_not_starve_others(web_kith):
    """50 connections each send half a request head and then a byte now and then.
    Meanwhile the household's requests are answered, and the server closes every slow
    connection once the header deadline (10 s) passes."""
    ctx = web_kith.https_context()
    slow = []
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", web_kith.https_port), timeout=STEP)
        t = ctx.wrap_socket(s, server_hostname=DOMAIN)
        t.sendall(f"GET / HTTP/1.1\r\nHost: {DOMAIN}\r\n".encode())
        slow.append(t)
    try:
        assert legit_get(web_kith) == 200
        closed = set()
        deadline = time.monotonic() + 10 + STEP
        while len(closed) < len(slow) and time.monotonic() < deadline:
            for i, t in enumerate(slow):
                if i in closed:
                    continue
                try:
                    t.sendall(b"X-a: b\r\n")
                    t.settimeout(0.05)
                    if t.recv(4096) == b"":
                        closed.add(i)
                except (socket.timeout, ssl.SSLWantReadError):
                    pass
                except (OSError, ssl.SSLError):
                    closed.add(i)
            time.sleep(0.5)
        assert len(closed) == len(slow), f"{len(slow) - len(closed)} slow connections open"
        assert legit_get(web_kith) == 200
    finally:
        for t in slow:
            with contextlib.suppress(OSError):
                t.close()


def test_a_connection_flood_is_capped_and_the_server_recovers(web_kith):
    """600 idle TCP connections (over the 512 cap): the server stays bounded in memory,
    and once they go, the household gets in again, over HTTPS and WebSocket."""
    socks = []
    try:
        for _ in range(600):
            socks.append(socket.create_connection(("127.0.0.1", web_kith.https_port),
                                                  timeout=STEP))
        web_kith.assert_memory_bounded()
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + STEP
    while legit_get(web_kith) != 200:
        assert time.monotonic() < deadline, "the server did not recover from the flood"
        time.sleep(0.2)

    async def scenario():
        ws = await WsXmpp.connect(web_kith)
        assert await ws.login("alice") == f"alice@{DOMAIN}/web"
        await ws.close()
    run(scenario())
