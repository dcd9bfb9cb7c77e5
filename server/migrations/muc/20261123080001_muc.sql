-- Group chats (XEP-0045). A row per persistent room; its configuration is
-- kept as the submitted muc#roomconfig data form (XML), so a new setting
-- needs no schema change.
CREATE TABLE muc_rooms (
    name TEXT PRIMARY KEY,          -- the room's localpart (lowercase)
    config TEXT NOT NULL,           -- <x xmlns='jabber:x:data' type='submit'>…</x>
    subject TEXT NOT NULL DEFAULT '',
    subject_by TEXT NOT NULL DEFAULT '', -- nick of whoever set it
    created INTEGER NOT NULL,       -- seconds since the Unix epoch
    creator TEXT NOT NULL           -- bare JID of the account that created it
);

-- Affiliations (owner, admin, member, outcast) by bare JID, with the nick a
-- user registered (XEP-0045 §7.10) and the reason given (bans).
CREATE TABLE muc_affiliations (
    room TEXT NOT NULL REFERENCES muc_rooms (name) ON DELETE CASCADE,
    jid TEXT NOT NULL,
    affiliation TEXT NOT NULL,
    nick TEXT,
    reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (room, jid)
);
CREATE UNIQUE INDEX muc_affiliations_nick ON muc_affiliations (room, nick) WHERE nick IS NOT NULL;
