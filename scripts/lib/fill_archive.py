#!/usr/bin/env python3
"""fill_archive.py DB ROWS [USER...]: add ROWS chat messages to the message archive of a
stopped kith's database (`data_dir/kith.db`), as if the accounts USER (local parts;
default alice and bob) had written to each other in pairs: each message archived twice,
once per side, ~330-byte stanzas, stamps one second apart ending now, a mark per 256 rows
as kith's archive writer keeps them. For measurements of a box with a history
(scripts/startup-order.sh, the idle figure in docs/benchmarks.md); not for real boxes.
"""

import sqlite3
import sys
import time

MARK_EVERY = 256
BODY = "x" * 200


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    db, rows = sys.argv[1], int(sys.argv[2])
    users = sys.argv[3:] or ["alice", "bob"]
    domain = "localhost"
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    ids = {}
    for u in users:
        for jid in (u, f"{u}@{domain}"):
            con.execute("INSERT OR IGNORE INTO archive_jids (jid) VALUES (?)", (jid,))
            ids[jid] = con.execute("SELECT id FROM archive_jids WHERE jid = ?", (jid,)).fetchone()[0]
    next_id = (con.execute("SELECT COALESCE(MAX(id), 0) FROM archive").fetchone()[0]) + 1
    now = int(time.time() * 1_000_000)
    start = now - rows * 1_000_000
    batch = []
    for i in range(rows):
        a, b = users[(2 * i) % len(users)], users[(2 * i + 1) % len(users)]
        stamp = start + i * 1_000_000
        stanza = (f"<message xmlns='jabber:client' from='{a}@{domain}/r' to='{b}@{domain}'"
                  f" type='chat' id='m{i}'><body>{BODY}</body></message>")
        # The sender's copy, then the recipient's.
        batch.append((next_id, ids[a], ids[f"{b}@{domain}"], "", stamp, stanza))
        batch.append((next_id + 1, ids[b], ids[f"{a}@{domain}"], "r", stamp, stanza))
        next_id += 2
        if len(batch) >= 20_000 or i == rows - 1:
            con.executemany("INSERT INTO archive (id, owner, with_jid, with_resource, stamp, stanza)"
                            " VALUES (?, ?, ?, ?, ?, ?)", batch)
            for row in batch:
                if row[0] % MARK_EVERY == 0:
                    con.execute("INSERT OR REPLACE INTO archive_marks (id, stamp) VALUES (?, ?)",
                                (row[0], row[4]))
            con.commit()
            batch.clear()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


if __name__ == "__main__":
    main()
