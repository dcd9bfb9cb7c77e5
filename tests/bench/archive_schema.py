#!/usr/bin/env python3
"""What an archive row costs SQLite under different schemas (docs/benchmarks.md, "The
archive keyed by numbers"). For each schema: a new database in WAL mode with
synchronous=FULL (as Kith's), filled with PREFILL rows (200 accounts in pairs, each
message archived twice, ~330-byte stanzas), then GROUPS transactions of GROUP rows each
(a multi-row INSERT OR IGNORE with explicit ids, as Kith's writer does) timed one by one.
Prints the median microseconds per row. Python's own cost per row (~1-3 us) is in every
figure alike.

    tests/bench/archive_schema.py [SCHEMA...] [--prefill N] [--dir DIR]

Schemas: text3 (the archive until 16fc607: text owner and correspondent, three indexes
with (owner, stamp)), text2 (without the stamp index), num3 (numbered JIDs, three
indexes), num2 (numbered JIDs, two indexes: Kith since 16fc607), clustered (WITHOUT ROWID
on (owner, id)).
"""
import argparse
import os
import random
import sqlite3
import time

TEXT_TABLE = ("CREATE TABLE archive (id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL,"
              " with_jid TEXT NOT NULL, with_resource TEXT NOT NULL DEFAULT '',"
              " stamp INTEGER NOT NULL, stanza TEXT NOT NULL)")
NUM_TABLE = TEXT_TABLE.replace("owner TEXT", "owner INTEGER").replace("with_jid TEXT", "with_jid INTEGER")
BY_OWNER = "CREATE INDEX a1 ON archive (owner, id)"
BY_WITH = "CREATE INDEX a2 ON archive (owner, with_jid, id)"
BY_STAMP = "CREATE INDEX a3 ON archive (owner, stamp)"
SCHEMAS = {
    "text3": (True, [TEXT_TABLE, BY_OWNER, BY_WITH, BY_STAMP]),
    "text2": (True, [TEXT_TABLE, BY_OWNER, BY_WITH]),
    "num3": (False, [NUM_TABLE, BY_OWNER, BY_WITH, BY_STAMP]),
    "num2": (False, [NUM_TABLE, BY_OWNER, BY_WITH]),
    "clustered": (False, [
        "CREATE TABLE archive (owner INTEGER NOT NULL, id INTEGER NOT NULL, with_jid INTEGER NOT NULL,"
        " with_resource TEXT NOT NULL DEFAULT '', stamp INTEGER NOT NULL, stanza TEXT NOT NULL,"
        " PRIMARY KEY (owner, id)) WITHOUT ROWID", BY_WITH, BY_STAMP]),
}
USERS, GROUP, GROUPS = 200, 16000, 8
STANZA = ("<message xmlns='jabber:client' to='u%03d@example.org/res' from='u%03d@example.org/res'"
          " type='chat' id='%s'><body>" + "x" * 180 + "</body><request xmlns='urn:xmpp:receipts'/>"
          "<active xmlns='http://jabber.org/protocol/chatstates'/></message>")


def measure(name: str, prefill: int, directory: str) -> float:
    textual, ddl = SCHEMAS[name]
    path = os.path.join(directory, f"archive-{name}.sqlite")
    for p in (path, path + "-wal", path + "-shm"):
        if os.path.exists(p):
            os.remove(p)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    for s in ddl:
        db.execute(s)
    rng = random.Random(1)
    next_id = 0

    def rows(n):
        nonlocal next_id
        out = []
        for _ in range(n // 2):
            a = rng.randrange(USERS)
            b = a ^ 1
            next_id += 2
            stamp = 1_700_000_000_000_000 + next_id * 50
            body = STANZA % (b, a, next_id)
            for k, (o, w) in enumerate(((a, b), (b, a))):
                owner = f"u{o:03d}" if textual else o
                other = f"u{w:03d}@example.org" if textual else w
                out.append((next_id - 1 + k, owner, other, "res", stamp, body))
        return out

    insert = ("INSERT OR IGNORE INTO archive (id, owner, with_jid, with_resource, stamp, stanza)"
              " VALUES (?,?,?,?,?,?)")

    def put(batch):
        db.execute("BEGIN IMMEDIATE")
        db.executemany(insert, batch)
        db.execute("COMMIT")

    for _ in range(prefill // GROUP):
        put(rows(GROUP))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    times = []
    for _ in range(GROUPS):
        batch = rows(GROUP)
        t = time.perf_counter()
        put(batch)
        times.append(time.perf_counter() - t)
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    db.close()
    size = os.path.getsize(path) >> 20
    for p in (path, path + "-wal", path + "-shm"):
        if os.path.exists(p):
            os.remove(p)
    times.sort()
    per_row = times[len(times) // 2] / GROUP * 1e6
    print(f"{name:10s} {per_row:6.2f} us/row (median of {GROUPS} groups of {GROUP}),"
          f" database {size} MiB after {prefill} rows", flush=True)
    return per_row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("schemas", nargs="*", default=list(SCHEMAS))
    ap.add_argument("--prefill", type=int, default=1_000_000)
    ap.add_argument("--dir", default="/tmp")
    args = ap.parse_args()
    for name in args.schemas:
        measure(name, args.prefill, args.dir)


if __name__ == "__main__":
    main()
