#!/usr/bin/env python3
"""Held sessions with OpenSSL clients: logs COUNT users in over STARTTLS (Python's ssl
module, i.e. OpenSSL, instead of kith-bench's rustls), CONCURRENCY at a time, holds them
all, and prints one JSON line like kith-bench's `sessions` report (scenario
`sessions_openssl`): the server's RSS before and with every session held, and per session.

Different TLS stacks leave different state in the server (session tickets, record sizes,
buffers), so the memory per session is measured with both. Standard library only.

  held_tls.py --port 19222 --cert cert.pem --server-pid PID --label kith --count 1000
"""
import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import ssl
import sys
import time

NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
MAX_BUFFER = 1 << 20


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Stream:
    """One client connection: a buffer of what the server sent, read until a pattern."""

    def __init__(self, reader, writer, deadline):
        self.reader, self.writer, self.deadline = reader, writer, deadline
        self.buf = ""

    async def until(self, pattern):
        rx = re.compile(pattern, re.S)
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            if "<stream:error" in self.buf or "<failure" in self.buf:
                raise RuntimeError(f"server refused: {self.buf[:300]}")
            if len(self.buf) > MAX_BUFFER:
                raise RuntimeError("server sent more than 1 MiB without the expected answer")
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"waiting for {pattern!r}; have {self.buf[:200]!r}")
            chunk = await asyncio.wait_for(self.reader.read(65536), left)
            if not chunk:
                raise RuntimeError(f"connection closed; have {self.buf[:200]!r}")
            self.buf += chunk.decode("utf-8", "replace")

    def send(self, text):
        self.writer.write(text.encode())

    async def open(self, domain):
        self.buf = ""
        self.send(f"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' "
                  "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
        await self.writer.drain()
        return (await self.until(r"<stream:features.*?</stream:features>")).group(0)


def scram_final(user_b64_first, server_first, password, cnonce):
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    nonce, salt, iters = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
    if not nonce.startswith(cnonce):
        raise RuntimeError("server nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iters)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha1).digest()
    stored = hashlib.sha1(client_key).digest()
    without_proof = f"c=biws,r={nonce}"
    auth_message = f"{user_b64_first},{server_first},{without_proof}".encode()
    signature = hmac.new(stored, auth_message, hashlib.sha1).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    return f"{without_proof},p={base64.b64encode(proof).decode()}"


async def login(args, ctx, n):
    deadline = time.monotonic() + args.timeout
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", args.port), args.timeout)
    s = Stream(reader, writer, deadline)
    features = await s.open(args.domain)
    if "starttls" not in features:
        raise RuntimeError("no STARTTLS offered")
    s.send(f"<starttls xmlns='{NS_TLS}'/>")
    await s.until(r"<proceed[^>]*/>|<proceed[^>]*>\s*</proceed>")
    await writer.start_tls(ctx, server_hostname=args.domain)
    features = await s.open(args.domain)
    if "SCRAM-SHA-1<" not in features:
        raise RuntimeError("no SCRAM-SHA-1 offered")
    user = f"{args.user_prefix}{n}"
    cnonce = base64.b64encode(os.urandom(18)).decode()
    bare_first = f"n={user},r={cnonce}"
    s.send(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-1'>"
           f"{base64.b64encode(('n,,' + bare_first).encode()).decode()}</auth>")
    challenge = (await s.until(r"<challenge[^>]*>([^<]*)</challenge>")).group(1)
    server_first = base64.b64decode(challenge).decode()
    final = scram_final(bare_first, server_first, args.password, cnonce)
    s.send(f"<response xmlns='{NS_SASL}'>{base64.b64encode(final.encode()).decode()}</response>")
    await s.until(r"<success[^>]*/>|<success[^>]*>[^<]*</success>")
    features = await s.open(args.domain)
    s.send(f"<iq type='set' id='bind'><bind xmlns='{NS_BIND}'><resource>held</resource>"
           "</bind></iq>")
    await s.until(r"<jid>[^<]+</jid>")
    if re.search(r"<session[^>]*xmpp-session[^>]*>\s*(<required/>)", features):
        s.send("<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
        await s.until(r"id=['\"]sess['\"]")
    s.send("<presence/>")
    await writer.drain()
    return s


async def hold(s, stop):
    """Reads and drops whatever the server sends until told to stop."""
    while not stop.is_set():
        try:
            chunk = await asyncio.wait_for(s.reader.read(65536), 1.0)
        except asyncio.TimeoutError:
            continue
        if not chunk:
            return


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True, help="the certificate the server presents (pinned)")
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--user-prefix", default="u")
    p.add_argument("--password", default="bench-pass")
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--settle", type=float, default=2.0)
    args = p.parse_args()

    ctx = ssl.create_default_context(cafile=args.cert)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    before_rss, before_cpu = rss_kib(args.server_pid), cpu_s(args.server_pid)
    gate = asyncio.Semaphore(args.concurrency)
    stop = asyncio.Event()
    sessions, errors, holders = [], [], []
    start = time.monotonic()

    async def one(n):
        async with gate:
            try:
                s = await login(args, ctx, n)
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                errors.append(f"u{n}: {e!r}"[:300])
                return
        sessions.append(s)
        holders.append(asyncio.create_task(hold(s, stop)))

    await asyncio.gather(*(one(n) for n in range(1, args.count + 1)))
    elapsed = time.monotonic() - start
    await asyncio.sleep(args.settle)
    held_rss, after_cpu = rss_kib(args.server_pid), cpu_s(args.server_pid)
    stop.set()
    await asyncio.gather(*holders, return_exceptions=True)
    for s in sessions:
        try:
            s.send("</stream:stream>")
            s.writer.close()
        except Exception:  # noqa: BLE001 - closing politely is best effort
            pass
    ok = len(sessions)
    report = {
        "scenario": "sessions_openssl",
        "server": args.label,
        "client": f"python ssl ({ssl.OPENSSL_VERSION})",
        "count": args.count,
        "concurrency": args.concurrency,
        "ok": ok,
        "errors": len(errors),
        "login_per_s": ok / elapsed if elapsed > 0 else 0,
        "server_rss_before_kib": before_rss,
        "server_rss_held_kib": held_rss,
        "server_kib_per_session": (held_rss - before_rss) / ok if ok else 0,
        "server_cpu_ms_per_login": 1000 * (after_cpu - before_cpu) / ok if ok else 0,
    }
    if errors:
        report["first_error"] = errors[0]
    print(json.dumps(report))
    print(" ".join(f"{k}={v}" for k, v in report.items()), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
