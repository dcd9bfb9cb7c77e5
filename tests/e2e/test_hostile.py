"""Hostile input. Each attack runs while alice and bob stay logged in with slixmpp; after
it the server must have answered the attacker with the right stream error (RFC 6120 §4.9),
closed that connection, kept alice and bob's sessions (they still get each other's
messages), and kept its peak memory under RSS_LIMIT_KIB (see conftest)."""

import asyncio
import contextlib
import select
import ssl
import threading
import time

import pytest

from conftest import (DOMAIN, RSS_LIMIT_KIB, STEP, RawXmpp, StreamClosed, exchange, online,
                      run, stream_error_condition, wait_until)

BOMB = ("<?xml version='1.0'?>"
        "<!DOCTYPE lolz ["
        "<!ENTITY lol 'lol'>"
        + "".join(f"<!ENTITY lol{i} '{('&lol' + str(i - 1) + ';') * 10 if i > 1 else '&lol;' * 10}'>"
                  for i in range(1, 10))
        + "]>")
STREAM_HEADER = (f"<stream:stream to='{DOMAIN}' version='1.0' xmlns='jabber:client' "
                 "xmlns:stream='http://etherx.jabber.org/streams'>")


@contextlib.asynccontextmanager
async def household(server, growth_kib: int = 8 * 1024):
    """alice and bob chatting before, during and after an attack. Besides the absolute
    bound, the attack may raise kith's peak RSS by at most `growth_kib` (8 MiB: a 256 KiB
    stanza, socket buffers and allocator slack; buffering a 10 MB stanza would not fit)."""
    async with online(server, "alice", "phone") as alice, online(server, "bob", "laptop") as bob:
        await exchange(bob, alice, "before the attack")
        before = server.peak_rss_kib()
        yield alice, bob
        assert server.alive(), "kith died:\n" + server.log_tail()
        assert alice.transport is not None, "alice was disconnected by someone else's attack"
        assert bob.transport is not None, "bob was disconnected by someone else's attack"
        await exchange(bob, alice, "after the attack")
        await exchange(alice, bob, "still here")
        peak = server.peak_rss_kib()
        print(f"kith peak RSS {before} -> {peak} KiB, now {server.rss_kib()} KiB")
        assert peak - before < growth_kib, \
            f"the attack raised kith's peak RSS by {peak - before} KiB (bound {growth_kib})"
    server.assert_memory_bounded()


def attack(server, payload: bytes, *, tls=None, login=None, pre=b"") -> RawXmpp:
    """Connect (optionally STARTTLS + log in as `login`), send `payload`, read until the
    server closes. Returns the socket client with everything it received in `.raw`."""
    raw = RawXmpp(server.c2s_port)
    if login:
        raw.login(tls, login, "attacker")
        raw.raw = b""
    raw.send(pre + payload)
    raw.read_until_closed(STEP)
    raw.close()
    return raw


def assert_condition(raw: RawXmpp, *allowed: str):
    cond = stream_error_condition(raw.raw)
    assert cond in allowed, f"stream error {cond!r}, wanted {allowed}; got {raw.raw[-400:]!r}"
    assert raw.raw.rstrip().endswith(b"</stream:stream>"), \
        f"stream not closed after the error: {raw.raw[-200:]!r}"


# ------------------------------------------------------------------ restricted XML


RESTRICTED = {
    "billion-laughs-doctype": (BOMB + STREAM_HEADER, False),
    "doctype-after-auth": (BOMB + STREAM_HEADER, True),
    "comment": (STREAM_HEADER + "<!-- a comment -->", False),
    "processing-instruction": (STREAM_HEADER + "<?evil pi?>", False),
}


@pytest.mark.parametrize("case", list(RESTRICTED))
def test_restricted_xml_is_refused(kith, test_ca, case):
    payload, after_auth = RESTRICTED[case]

    async def scenario():
        async with household(kith):
            if after_auth:
                # A fresh stream header (the restart after SASL) with a DOCTYPE in front.
                def go():
                    raw = RawXmpp(kith.c2s_port)
                    raw.starttls(test_ca.client_context())
                    raw.mechanisms()
                    assert raw.auth_plain("carol").tag.endswith("success")
                    raw.raw = b""
                    raw.send(payload)
                    raw.read_until_closed(STEP)
                    return raw
                raw = await asyncio.to_thread(go)
            else:
                raw = await asyncio.to_thread(attack, kith, payload.encode())
            assert_condition(raw, "restricted-xml")
    run(scenario())


def test_entity_reference_in_a_stanza_is_refused(kith, test_ca):
    async def scenario():
        async with household(kith):
            raw = await asyncio.to_thread(
                attack, kith, f"<message to='alice@{DOMAIN}'><body>&lol9;</body></message>"
                .encode(), tls=test_ca.client_context(), login="carol")
            assert_condition(raw, "restricted-xml", "not-well-formed")
    run(scenario())


# ------------------------------------------------------------------ encoding


@pytest.mark.parametrize("after_auth", [False, True], ids=["before-auth", "after-auth"])
def test_invalid_utf8_is_refused(kith, test_ca, after_auth):
    bad = f"<message to='alice@{DOMAIN}'><body>".encode() + b"\xc3\x28\xff\xfe" + \
        b"</body></message>"

    async def scenario():
        async with household(kith):
            if after_auth:
                raw = await asyncio.to_thread(attack, kith, bad, tls=test_ca.client_context(),
                                              login="carol")
            else:
                raw = await asyncio.to_thread(attack, kith, bad, pre=STREAM_HEADER.encode())
            assert_condition(raw, "unsupported-encoding", "not-well-formed")
    run(scenario())


def test_utf16_stream_is_unsupported_encoding(kith):
    async def scenario():
        async with household(kith):
            payload = ("<?xml version='1.0' encoding='UTF-16'?>" + STREAM_HEADER).encode("utf-16")
            raw = await asyncio.to_thread(attack, kith, payload)
            assert_condition(raw, "unsupported-encoding", "not-well-formed")
    run(scenario())


# ------------------------------------------------------------------ size, depth, width


@pytest.mark.parametrize("after_auth", [False, True], ids=["before-auth", "after-auth"])
def test_ten_thousand_levels_deep_is_policy_violation(kith, test_ca, after_auth):
    deep = f"<message to='alice@{DOMAIN}'>".encode() + b"<a>" * 10_000

    async def scenario():
        async with household(kith):
            if after_auth:
                raw = await asyncio.to_thread(attack, kith, deep, tls=test_ca.client_context(),
                                              login="carol")
            else:
                raw = await asyncio.to_thread(attack, kith, deep, pre=STREAM_HEADER.encode())
            assert_condition(raw, "policy-violation")
    run(scenario())


def test_ten_thousand_attributes_is_policy_violation(kith, test_ca):
    wide = ("<message to='alice@" + DOMAIN + "' "
            + " ".join(f"a{i}='x'" for i in range(10_000)) + "><body>hi</body></message>")
    assert len(wide) < 256 * 1024  # under the stanza size limit: this is about the count

    async def scenario():
        async with household(kith):
            raw = await asyncio.to_thread(attack, kith, wide.encode(),
                                          tls=test_ca.client_context(), login="carol")
            assert_condition(raw, "policy-violation")
    run(scenario())


def test_stanza_over_8k_before_auth_is_policy_violation(kith):
    big = f"<iq type='get' id='x' to='{DOMAIN}'><query xmlns='urn:x'>".encode() \
        + b"A" * 20_000 + b"</query></iq>"

    async def scenario():
        async with household(kith):
            raw = await asyncio.to_thread(attack, kith, big, pre=STREAM_HEADER.encode())
            assert_condition(raw, "policy-violation")
    run(scenario())


def send_huge(raw: RawXmpp, total: int, chunk: int = 64 * 1024) -> int:
    """Stream one `total`-byte message; stop when the server stops us. Returns bytes sent."""
    raw.send(f"<message to='alice@{DOMAIN}' type='chat'><body>")
    block = b"A" * chunk
    sent = 0
    deadline = time.monotonic() + 60
    while sent < total and time.monotonic() < deadline:
        try:
            raw.sock.settimeout(STEP)
            raw.sock.sendall(block)
            sent += len(block)
        except (OSError, ssl.SSLError):
            break
        # Keep what the server says as it says it, before a reset could drop it.
        while not raw.closed and (select.select([raw.sock], [], [], 0)[0]
                                  or getattr(raw.sock, "pending", lambda: 0)()):
            raw.recv_some(1.0)
        if raw.closed:
            break
    return sent


def test_ten_megabyte_stanza_is_cut_off(kith, test_ca):
    total = 10 * 1024 * 1024

    async def scenario():
        async with household(kith) as (alice, _bob):
            def go():
                raw = RawXmpp(kith.c2s_port)
                raw.login(test_ca.client_context(), "carol", "big")
                raw.raw = b""
                sent = send_huge(raw, total)
                with contextlib.suppress(TimeoutError):
                    raw.read_until_closed(STEP)
                raw.close()
                return raw, sent
            raw, sent = await asyncio.to_thread(go)
            print(f"10 MB stanza: {sent} bytes written before the server cut it off")
            assert_condition(raw, "policy-violation")
            assert raw.closed, "connection left open after policy-violation"
            assert sent < total, "the server swallowed the whole 10 MB stanza"
            await alice.expect_no_message(0.5)
    run(scenario())


def test_stanza_size_limit_follows_config(kith_factory, test_ca):
    k = kith_factory(limits={"stanza_size": 16 * 1024})
    for u in ("alice", "bob", "carol"):
        k.add_user(u)
    k.start()

    async def scenario():
        async with household(k) as (alice, bob):
            # Under the limit is delivered …
            bob.send_message(mto=alice.boundjid.bare, mbody="x" * 8000, mtype="chat")
            assert len((await alice.next_message())["body"]) == 8000
            # … over it is a policy violation.
            raw = await asyncio.to_thread(
                attack, k, f"<message to='alice@{DOMAIN}'><body>{'y' * 40_000}</body></message>"
                .encode(), tls=test_ca.client_context(), login="carol")
            assert_condition(raw, "policy-violation")
    run(scenario())


# ------------------------------------------------------------------ many, slow


def test_five_hundred_connections_that_never_authenticate(kith_factory, test_ca):
    """500 sockets that connect and then idle (some silent, some after a stream header, some
    after STARTTLS): the household keeps chatting, memory stays bounded, and the server
    closes all 500 once auth_timeout_secs has passed, with connection-timeout where a stream
    was open."""
    timeout = 5
    k = kith_factory(limits={"auth_timeout_secs": timeout, "connections_per_ip": 0})
    for u in ("alice", "bob"):
        k.add_user(u)
    k.start()

    async def scenario():
        # 500 connections, 100 of them with TLS state: up to 48 KiB each.
        async with household(k, growth_kib=24 * 1024) as (alice, bob):
            def open_all():
                silent, streams = [], []
                ctx = test_ca.client_context()
                for i in range(500):
                    r = RawXmpp(k.c2s_port, source="127.0.0.2")
                    try:
                        if i % 5 == 0:  # 100 get as far as TLS and a new stream
                            r.starttls(ctx)
                            r.open_stream()
                            r.features()
                            streams.append(r)
                        elif i % 5 in (1, 2):  # 200 open a stream and stop there
                            r.open_stream()
                            streams.append(r)
                        else:  # 200 say nothing at all
                            silent.append(r)
                    except (StreamClosed, OSError):
                        # Only legitimate if this socket's auth timeout already ran out
                        # (a very loaded machine); it still has to be closed.
                        assert time.monotonic() - started > timeout, "closed too early"
                        silent.append(r)
                return silent, streams

            started = time.monotonic()
            silent, streams = await asyncio.to_thread(open_all)
            opened_in = time.monotonic() - started
            print(f"500 connections opened in {opened_in:.1f} s")
            # The household is still served while the 500 hang around.
            await exchange(bob, alice, "during the siege")
            assert k.rss_kib() < RSS_LIMIT_KIB
            if time.monotonic() - started < timeout - 1:
                early = sum(r.poll_closed() for r in silent + streams)
                assert early == 0, f"{early} idle connections closed before auth_timeout_secs"

            def all_closed():
                everyone = silent + streams
                wait_until(lambda: all(r.poll_closed() for r in everyone),
                           timeout + opened_in + 15, "the server to close 500 idle sockets")
                for r in everyone:
                    r.close()
                return time.monotonic() - started

            closed_after = await asyncio.to_thread(all_closed)
            print(f"all 500 closed {closed_after:.1f} s after the first connected")
            assert closed_after >= timeout - 0.5, "closed before auth_timeout_secs"
            wrong = [r.raw[-200:] for r in streams
                     if stream_error_condition(r.raw) != "connection-timeout"]
            assert not wrong, f"{len(wrong)} of {len(streams)} open streams closed without " \
                              f"connection-timeout, e.g. {wrong[0]!r}"

    run(scenario(), timeout=150)


def test_connections_per_ip_are_bounded(kith_factory, test_ca):
    k = kith_factory(limits={"connections_per_ip": 3})
    for u in ("alice", "bob"):
        k.add_user(u)
    k.start()

    async def scenario():
        async with household(k):
            def go():
                held = [RawXmpp(k.c2s_port, source="127.0.0.3") for _ in range(3)]
                for r in held:
                    r.open_stream()
                    r.features()
                extra = RawXmpp(k.c2s_port, source="127.0.0.3")
                with contextlib.suppress(OSError):
                    extra.open_stream()
                extra.read_until_closed(STEP)
                other = RawXmpp(k.c2s_port, source="127.0.0.4")
                other.open_stream()
                other.features()  # another address is still welcome
                for r in held + [extra, other]:
                    r.close()
                return extra
            extra = await asyncio.to_thread(go)
            cond = stream_error_condition(extra.raw)
            assert cond in (None, "policy-violation", "resource-constraint"), extra.raw[-300:]
    run(scenario())


def test_a_reader_that_never_reads_is_closed_and_costs_bounded_memory(kith_factory, test_ca):
    """carol's tablet logs in and then never reads; dave floods it with 80 MB of headlines.
    The server must not queue them without bound: carol's session is closed once its queue
    (session_queue) is full, dave's flood goes through, alice and bob don't notice."""
    k = kith_factory(limits={"session_queue": 50, "offline_max": 10})
    for u in ("alice", "bob", "carol", "dave"):
        k.add_user(u)
    k.start()
    ctx = test_ca.client_context()
    n, body = 20_000, "z" * 4000

    async def scenario():
        async with household(k):
            def go():
                carol = RawXmpp(k.c2s_port, rcvbuf=4096)
                carol_jid = carol.login(ctx, "carol", "tablet")
                carol.send("<presence/>")
                dave = RawXmpp(k.c2s_port)
                dave.login(ctx, "dave", "flood")
                stop = threading.Event()

                def drain():  # dave reads whatever comes back, so *he* is not the slow one
                    while not stop.is_set() and not dave.closed:
                        with contextlib.suppress(TimeoutError):
                            dave.recv_some(0.2)
                            dave.raw = dave.raw[-4096:]
                t = threading.Thread(target=drain, daemon=True)
                t.start()
                stanza = (f"<message to='{carol_jid}' type='headline'><body>{body}</body>"
                          "</message>").encode()
                started = time.monotonic()
                dave.sock.settimeout(60)
                for _ in range(n // 100):
                    dave.sock.sendall(stanza * 100)
                flood_secs = time.monotonic() - started
                peak_during = k.rss_kib()
                # Now carol reads: she must hit the end of a closed stream long before 80 MB.
                got = 0
                carol.sock.settimeout(STEP)
                deadline = time.monotonic() + 30
                while not carol.closed and time.monotonic() < deadline:
                    with contextlib.suppress(TimeoutError):
                        got += len(carol.recv_some(2.0))
                    carol.raw = carol.raw[-4096:]
                stop.set()
                t.join(5)
                carol.close()
                dave.close()
                return got, flood_secs, peak_during, carol.closed
            got, flood_secs, peak_during, closed = await asyncio.to_thread(go)
            print(f"never-reading client: {got} bytes readable after a {n * len(body)} byte "
                  f"flood ({flood_secs:.1f} s), closed={closed}")
            assert closed, "the server kept the never-reading session open through the flood"
            assert got < n * len(body) // 4, f"carol could still read {got} bytes: queued unbounded"
            assert flood_secs < 60
            assert peak_during < RSS_LIMIT_KIB
    run(scenario(), timeout=180)


def test_unknown_top_level_element_is_unsupported_stanza_type(kith, test_ca):
    """RFC 6120 §4.9.3.24: a first-level child of the stream that is not a stanza."""
    async def scenario():
        async with household(kith):
            raw = await asyncio.to_thread(attack, kith, b"<nonsense xmlns='jabber:client'/>",
                                          tls=test_ca.client_context(), login="carol")
            assert_condition(raw, "unsupported-stanza-type")
    run(scenario())


def test_oversized_resource_is_refused_at_bind(kith, test_ca):
    """RFC 7622 §3.4: a resourcepart is at most 1023 octets; binding a longer one fails
    with a stanza error (bad-request or not-allowed), and the server lives on."""
    async def scenario():
        async with household(kith):
            def go():
                raw = RawXmpp(kith.c2s_port)
                raw.starttls(test_ca.client_context())
                raw.mechanisms()
                assert raw.auth_plain("carol").tag.endswith("success")
                raw.open_stream()
                raw.features()
                raw.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                         f"<resource>{'r' * 3000}</resource></bind></iq>")
                try:
                    return raw.element()
                finally:
                    raw.close()
            iq = await asyncio.to_thread(go)
            assert iq.get("type") == "error", f"bound a 3000-octet resource: {iq.attrib}"
            cond = [c.tag.split("}")[1] for c in iq.find("{jabber:client}error")]
            assert set(cond) & {"bad-request", "not-allowed"}, cond
    run(scenario())


def test_default_connection_limit_is_one_hundred_per_address(kith):
    """The documented default: 100 connections from one address are served, the 101st is
    turned away; nobody else notices."""
    async def scenario():
        async with household(kith):
            def go():
                held = []
                try:
                    for _ in range(100):
                        r = RawXmpp(kith.c2s_port, source="127.0.0.9")
                        held.append(r)
                        r.open_stream()
                        r.features()
                    extra = RawXmpp(kith.c2s_port, source="127.0.0.9")
                    with contextlib.suppress(OSError):
                        extra.open_stream()
                    extra.read_until_closed(STEP)
                    extra.close()
                    return extra
                finally:
                    for r in held:
                        r.close()
            extra = await asyncio.to_thread(go)
            assert stream_error_condition(extra.raw) in (None, "policy-violation",
                                                         "resource-constraint"), extra.raw[-300:]
    run(scenario())
