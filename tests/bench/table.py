#!/usr/bin/env python3
"""Turns the JSON lines of kith-bench runs (results.jsonl) into one Markdown table:
the median of every figure per server over the runs, and Kith's ratio to each peer.

Usage: table.py results.jsonl
"""
import json
import statistics
import sys
from collections import defaultdict

# "kith-before": the binary before a change (before_after.sh), compared with "kith".
# "prosody-mam", "ejabberd-mam": the peers with their message archive on (servers.sh).
SERVERS = ["prosody", "prosody-mam", "ejabberd", "ejabberd-mam", "kith-before", "kith"]

# (label, scenario, selector on the report, field, scale, higher_is_better)
ROWS = [
    ("idle RSS (MiB)", "idle", {}, "server_rss_kib", 1 / 1024, False),
    ("RSS per held session, N={n}, rustls clients (KiB)", "sessions", {}, "server_kib_per_session", 1, False),
    ("RSS per held session, N={n}, OpenSSL clients (KiB)", "sessions_openssl", {}, "server_kib_per_session", 1, False),
    ("server CPU per login, N={n}, 32 at a time (ms)", "sessions", {}, "server_cpu_ms_per_login", 1, False),
    ("logins/s, N={n}, 32 at a time", "sessions", {}, "login_per_s", 1, True),
    ("sequential login p50 (ms)", "latency", {}, "login_p50_ms", 1, False),
    ("sequential login p99 (ms)", "latency", {}, "login_p99_ms", 1, False),
    ("server CPU per sequential login (ms)", "latency", {}, "server_cpu_ms_per_login", 1, False),
    ("msgs/s, window {w}", "throughput", {}, "msgs_per_s", 1, True),
    ("msgs per server CPU-s, window {w}", "throughput", {}, "msgs_per_server_cpu_s", 1, True),
    ("delivery p50, window {w} (ms)", "throughput", {}, "lat_p50_ms", 1, False),
    ("delivery p99, window {w} (ms)", "throughput", {}, "lat_p99_ms", 1, False),
    ("messages lost, window {w} (sum of runs)", "throughput", {}, "lost", 1, False),
    ("generator CPU, window {w} (% of one core)", "throughput", {}, "client_cpu_pct", 1, False),
    ("generator CPU per login, N={n} (ms)", "sessions", {}, "client_cpu_ms_per_login", 1, False),
    # muc.sh: one room, {n} occupants.
    ("group chat: deliveries/s, {n} occupants", "muc", {}, "deliveries_per_s", 1, True),
    ("group chat: messages sent/s, {n} occupants", "muc", {}, "msgs_per_s", 1, True),
    ("group chat: deliveries per server CPU-s", "muc", {}, "deliveries_per_server_cpu_s", 1, True),
    ("group chat: server CPU (% of one core)", "muc", {}, "server_cpu_pct", 1, False),
    ("group chat: delivery p50 (ms)", "muc", {}, "lat_p50_ms", 1, False),
    ("group chat: delivery p99 (ms)", "muc", {}, "lat_p99_ms", 1, False),
    ("group chat: server RSS, logged in, before joining (MiB)", "muc", {}, "server_rss_logged_in_kib", 1 / 1024, False),
    ("group chat: server RSS after the run (MiB)", "muc", {}, "server_rss_kib", 1 / 1024, False),
    ("group chat: owner creates the room, grants the others membership (s)", "muc", {}, "setup_s", 1, False),
    ("group chat: the others join at once, until the last is in (s)", "muc", {}, "join_s", 1, False),
    ("group chat: deliveries lost (sum of runs)", "muc", {}, "lost", 1, False),
    ("group chat: out of order (sum of runs)", "muc", {}, "out_of_order", 1, False),
    ("group chat: generator CPU (% of one core)", "muc", {}, "client_cpu_pct", 1, False),
]

# Summed over runs rather than a median; no ratio.
SUMS = {"lost", "out_of_order"}


def load(path):
    reports = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                if r.get("scenario") in ("throughput", "muc") and r.get("seconds"):
                    r["client_cpu_pct"] = 100 * r["client_cpu_s"] / r["seconds"]
                if r.get("scenario") == "muc" and r.get("seconds"):
                    r["server_cpu_pct"] = 100 * r["server_cpu_s"] / r["seconds"]
                reports.append(r)
    return reports


def variants(reports, scenario):
    """The distinct sizes of a scenario: session counts or windows."""
    if not any(r["scenario"] == scenario for r in reports):
        return []
    if scenario == "throughput":
        # Reports from before the addressing option have no "to": bare JIDs.
        for r in reports:
            if r["scenario"] == scenario:
                r.setdefault("to", "bare")
        pairs = sorted({(r["window"], r["to"]) for r in reports if r["scenario"] == scenario})
        return [(f"{int(w)}, {to} JID", {"window": w, "to": to}) for w, to in pairs]
    key = {"sessions": "count", "sessions_openssl": "count", "muc": "users"}.get(scenario)
    if key is None:
        return [(None, {})]
    values = sorted({r[key] for r in reports if r["scenario"] == scenario})
    return [(v, {key: v}) for v in values]


def fmt(v):
    if v is None:
        return "–"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def ratio(kith, peer, higher_is_better):
    if kith is None or peer is None or kith <= 0 or peer <= 0:
        return "–"
    # Always "how many times better Kith is": >1 means Kith wins.
    x = kith / peer if higher_is_better else peer / kith
    return f"{x:.2f}×"


def main():
    reports = load(sys.argv[1])
    commits = sorted({r["kith"] for r in reports if r["scenario"] == "machine" and r.get("kith")})
    if commits:
        peers = sorted({r["peers"] for r in reports if r["scenario"] == "machine" and r.get("peers")})
        print(f"Kith measured at commit {', '.join(commits)}; {'; '.join(peers) or 'peers: -'}")
        sizes = [r["kith_db_bytes"] for r in reports if r["scenario"] == "machine" and "kith_db_bytes" in r]
        if sizes:
            print(f"Kith's database (archive included): {min(sizes) / 1e6:.0f} MB at the start, "
                  f"{max(sizes) / 1e6:.0f} MB at the end")
        print()
    servers = [s for s in SERVERS if any(r.get("server") == s for r in reports)]
    head = ["figure (median of runs)"] + servers
    if "kith" in servers:
        head += [f"Kith vs {p}" for p in servers if p != "kith"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, scenario, _, field, scale, better in ROWS:
        for value, sel in variants(reports, scenario):
            cells = {}
            for s in servers:
                vals = [
                    r[field] * scale
                    for r in reports
                    if r.get("server") == s
                    and r["scenario"] == scenario
                    and all(r.get(k) == v for k, v in sel.items())
                    and r.get(field) is not None
                ]
                if not vals:
                    cells[s] = None
                elif field in SUMS:
                    cells[s] = sum(vals)
                else:
                    cells[s] = statistics.median(vals)
            name = label.format(n=value, w=value)
            row = [name] + [fmt(cells[s]) for s in servers]
            if "kith" in servers:
                for p in servers:
                    if p != "kith":
                        no_ratio = field in SUMS or "generator" in label or field == "server_cpu_pct"
                        row.append("" if no_ratio else ratio(cells["kith"], cells[p], better))
            print("| " + " | ".join(row) + " |")
    runs = defaultdict(int)
    errors = 0
    for r in reports:
        if r["scenario"] == "idle":
            runs[r["server"]] += 1
        errors += int(r.get("errors") or 0)
    print()
    print("runs per server: " + ", ".join(f"{s} {runs[s]}" for s in servers)
          + f"; failed logins or stalled senders in all runs: {errors}")


if __name__ == "__main__":
    main()
