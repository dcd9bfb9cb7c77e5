-- The archive keyed by numbers, with one index fewer (issue 15).
--
-- Every archived row used to carry its owner and correspondent as text, in
-- three indexes: (username, id), (username, with_bare, id) and
-- (username, stamp). Each row's insert walked all three with text compares,
-- and the writer spent most of its time there. Now the JIDs (account names,
-- room JIDs, bare correspondents) are stored once in `archive_jids` and the
-- archive holds their numbers; the time index is gone: ids are allocated in
-- time order, so a time bound is turned into an id bound through
-- `archive_marks` — one row per committed group of rows: its first id and
-- the smallest stamp in it — and the rows near that bound are checked by
-- their own stamp.

CREATE TABLE archive_jids (
    id INTEGER PRIMARY KEY,
    jid TEXT NOT NULL UNIQUE
);
INSERT OR IGNORE INTO archive_jids (jid) SELECT DISTINCT username FROM archive;
INSERT OR IGNORE INTO archive_jids (jid) SELECT DISTINCT with_bare FROM archive;

CREATE TABLE archive_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner INTEGER NOT NULL,     -- archive_jids.id: the account (local part) or room JID
    with_jid INTEGER NOT NULL,  -- archive_jids.id: the other side's bare JID
    with_resource TEXT NOT NULL DEFAULT '',
    stamp INTEGER NOT NULL,     -- microseconds since the Unix epoch
    stanza TEXT NOT NULL
);
INSERT INTO archive_new (id, owner, with_jid, with_resource, stamp, stanza)
    SELECT a.id, o.id, w.id, a.with_resource, a.stamp, a.stanza
    FROM archive a
    JOIN archive_jids o ON o.jid = a.username
    JOIN archive_jids w ON w.jid = a.with_bare;

-- Ids are never reused, also those of deleted rows: carry the old sequence.
UPDATE sqlite_sequence
    SET seq = (SELECT MAX(seq) FROM sqlite_sequence WHERE name IN ('archive', 'archive_new'))
    WHERE name = 'archive_new';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'archive_new', seq FROM sqlite_sequence
    WHERE name = 'archive'
      AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'archive_new');

-- The marks of the rows already there: one per 256 ids.
CREATE TABLE archive_marks (
    id INTEGER PRIMARY KEY,    -- the first archive id of a group
    stamp INTEGER NOT NULL     -- the smallest stamp in that group
);
INSERT INTO archive_marks (id, stamp)
    SELECT MIN(id), MIN(stamp) FROM archive GROUP BY id / 256;

DROP TABLE archive;
ALTER TABLE archive_new RENAME TO archive;
CREATE INDEX archive_by_owner ON archive (owner, id);
CREATE INDEX archive_by_owner_with ON archive (owner, with_jid, id);
CREATE INDEX archive_marks_by_stamp ON archive_marks (stamp);
