-- Message Archive Management (XEP-0313): one row per archived message per
-- account (a chat between two local users is archived twice, once per side).
-- `id` is the archive id: assigned in time order and never reused (AUTOINCREMENT),
-- so paging walks the (username, …, id) indexes and never sorts.
CREATE TABLE archive (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL,
    with_bare TEXT NOT NULL,
    with_resource TEXT NOT NULL DEFAULT '',
    stamp INTEGER NOT NULL, -- microseconds since the Unix epoch
    stanza TEXT NOT NULL
);
CREATE INDEX archive_by_user ON archive (username, id);
CREATE INDEX archive_by_user_with ON archive (username, with_bare, id);
CREATE INDEX archive_by_user_stamp ON archive (username, stamp);

-- Archiving preferences (XEP-0313 §5) and the retention override per account.
CREATE TABLE archive_prefs (
    username TEXT PRIMARY KEY,
    default_mode TEXT NOT NULL DEFAULT 'always',
    retention_days INTEGER -- NULL: the server's default
);
CREATE TABLE archive_prefs_jids (
    username TEXT NOT NULL,
    jid TEXT NOT NULL,
    always INTEGER NOT NULL, -- 1: always archive, 0: never
    PRIMARY KEY (username, jid)
);
