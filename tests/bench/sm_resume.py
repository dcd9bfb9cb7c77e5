#!/usr/bin/env python3
"""Benchmark (not a test): XEP-0198 stream resumption on Kith.

For each gap size N, RUNS times: bob's phone logs in, enables resumption and loses its
connection; alice sends N messages (acked by the server, so they are stored); a new
connection authenticates as bob, and the clock runs from writing `<resume/>` until
`<resumed/>` and all N messages have been read. Authentication and TLS are not timed.
Prints one line per N with p50/p99 in milliseconds, and JSON lines with every sample.

    KITH_BIN=target/ci/kith .venv/bin/python tests/bench/sm_resume.py [--runs 20] [--n 0,100,1000]

Against another server (tests/bench/sm_resume_peers.sh runs Prosody and ejabberd):
`--addr 127.0.0.1:PORT --users u1,u2 --password P`; the script then cannot read a log to
know the session hibernated and waits `--settle` seconds after dropping the connection.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from conftest import (DOMAIN, PASSWORD, Kith, RawXmpp, TestCA,  # noqa: E402
                      plain_context_unverified)
from test_sm import (HIBERNATED, NS_SM, SM, ack_request, bind, enable,  # noqa: E402
                     log_count, wait_for_log)


class Target:
    """Where to connect and how to tell that a dropped session has hibernated."""

    def __init__(self, port, ctx, users, password, kith=None, settle=1.0):
        self.port, self.ctx, self.users, self.password = port, ctx, users, password
        self.kith, self.settle = kith, settle

    def authenticated(self, who: str) -> RawXmpp:
        raw = RawXmpp(self.port)
        raw.starttls(self.ctx)
        raw.mechanisms()
        res = raw.auth_plain(self.users[who], self.password)
        assert res.tag.endswith("success"), res
        raw.open_stream()
        raw.features()
        return raw

    def before_drop(self):
        return log_count(self.kith, HIBERNATED) if self.kith else 0

    def hibernated(self, before):
        if self.kith:
            wait_for_log(self.kith, HIBERNATED, before)
        else:
            time.sleep(self.settle)


def percentile(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


STORE_SECONDS: dict[int, list[float]] = {}


def one_run(target, alice, n: int) -> float:
    bob = target.authenticated("bob")
    bind(bob, "phone")
    previd = enable(bob).get("id")
    assert ack_request(bob) == 0
    before = target.before_drop()
    bob.close()
    target.hibernated(before)
    stored = time.perf_counter()
    to = f"{target.users['bob']}@{DOMAIN}/phone"
    for i in range(n):
        alice.send(f"<message to='{to}' type='chat'><body>gap {i}</body></message>")
    ack_request(alice)  # every gap message is stored before the clock starts
    STORE_SECONDS.setdefault(n, []).append(time.perf_counter() - stored)

    raw = target.authenticated("bob")
    start = time.perf_counter()
    raw.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
    raw.expect(f"{SM}resumed")
    got = 0
    while got < n:
        el = raw.element()
        if el.tag == "{jabber:client}message":
            got += 1
    elapsed = time.perf_counter() - start
    raw.send(f"<a xmlns='{NS_SM}' h='{n}'/></stream:stream>")
    raw.close()
    return elapsed


def bench(target, runs, sizes):
    alice = target.authenticated("alice")
    bind(alice, "laptop")
    enable(alice)
    alice.timeout = 60  # storing 1000 gap messages is 1000 fsync'd commits on Kith
    for n in sizes:
        samples = [one_run(target, alice, n) * 1000 for _ in range(runs)]
        print(json.dumps({"bench": "sm_resume", "n": n, "ms": samples}))
        print(f"N={n:5d} runs={len(samples)} p50={statistics.median(samples):.1f} ms "
              f"p99={percentile(samples, 99):.1f} ms max={max(samples):.1f} ms; "
              f"storing the gap until acked: p50 "
              f"{statistics.median(STORE_SECONDS[n]) * 1000:.0f} ms",
              file=sys.stderr)
    alice.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--n", default="0,100,1000")
    ap.add_argument("--addr", help="another server's c2s address (STARTTLS, PLAIN)")
    ap.add_argument("--users", default="u1,u2", help="alice's and bob's usernames there")
    ap.add_argument("--password", default="bench-pass")
    ap.add_argument("--settle", type=float, default=1.0)
    args = ap.parse_args()
    sizes = [int(x) for x in args.n.split(",")]
    if args.addr:
        a, b = args.users.split(",")
        port = int(args.addr.rsplit(":", 1)[1])
        target = Target(port, plain_context_unverified(), {"alice": a, "bob": b},
                        args.password, settle=args.settle)
        return bench(target, args.runs, sizes)
    with tempfile.TemporaryDirectory(prefix="kith-sm-bench.") as d:
        d = Path(d)
        (d / "ca").mkdir()
        ca = TestCA(d / "ca")
        (d / "kith").mkdir()
        kith = Kith(d / "kith", ca)
        for u in ("alice", "bob"):
            kith.add_user(u)
        kith.start()
        try:
            target = Target(kith.c2s_port, ca.client_context(),
                            {"alice": "alice", "bob": "bob"}, PASSWORD, kith=kith)
            bench(target, args.runs, sizes)
        except BaseException:
            print(kith.log_tail(30), file=sys.stderr)
            raise
        finally:
            kith.stop()


if __name__ == "__main__":
    main()
