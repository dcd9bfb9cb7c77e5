#!/usr/bin/env python3
"""Benchmark (not a test): XEP-0198 stream resumption on Kith.

For each gap size N, RUNS times: bob's phone logs in, enables resumption and loses its
connection; alice sends N messages (acked by the server, so they are stored); a new
connection authenticates as bob, and the clock runs from writing `<resume/>` until
`<resumed/>` and all N messages have been read. Authentication and TLS are not timed.
Prints one line per N with p50/p99 in milliseconds, and JSON lines with every sample.

    KITH_BIN=target/ci/kith .venv/bin/python tests/bench/sm_resume.py [--runs 20] [--n 0,100,1000]
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from conftest import DOMAIN, Kith, TestCA  # noqa: E402
from test_sm import (HIBERNATED, NS_SM, SM, ack_request, authenticated, bind,  # noqa: E402
                     enable, log_count, wait_for_log)


def percentile(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


STORE_SECONDS: dict[int, list[float]] = {}


def one_run(kith, ctx, alice, n: int) -> float:
    bob, _ = authenticated(kith, ctx, "bob")
    bind(bob, "phone")
    previd = enable(bob).get("id")
    assert ack_request(bob) == 0
    before = log_count(kith, HIBERNATED)
    bob.close()
    wait_for_log(kith, HIBERNATED, before)
    stored = time.perf_counter()
    for i in range(n):
        alice.send(f"<message to='bob@{DOMAIN}/phone' type='chat'><body>gap {i}</body></message>")
    ack_request(alice)  # every gap message is stored before the clock starts
    STORE_SECONDS.setdefault(n, []).append(time.perf_counter() - stored)

    raw, _ = authenticated(kith, ctx, "bob")
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--n", default="0,100,1000")
    args = ap.parse_args()
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
            ctx = ca.client_context()
            alice, _ = authenticated(kith, ctx, "alice")
            bind(alice, "laptop")
            enable(alice)
            alice.timeout = 60  # storing 1000 gap messages is 1000 fsync'd commits
            for n in (int(x) for x in args.n.split(",")):
                samples = [one_run(kith, ctx, alice, n) * 1000 for _ in range(args.runs)]
                print(json.dumps({"bench": "sm_resume", "n": n, "ms": samples}))
                print(f"N={n:5d} runs={len(samples)} p50={statistics.median(samples):.1f} ms "
                      f"p99={percentile(samples, 99):.1f} ms max={max(samples):.1f} ms; "
                      f"storing the gap until acked: p50 "
                      f"{statistics.median(STORE_SECONDS[n]) * 1000:.0f} ms",
                      file=sys.stderr)
            alice.close()
        except BaseException:
            print(kith.log_tail(30), file=sys.stderr)
            raise
        finally:
            kith.stop()


if __name__ == "__main__":
    main()
