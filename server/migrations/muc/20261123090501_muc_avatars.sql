-- Room pictures (vcard-temp on the room JID, XEP-0054 / XEP-0486): the
-- vCard an owner stored, serialised, and the SHA-1 of its photo(s) that
-- disco#info and the room's presence advertise. Persistent rooms only; the
-- row goes with the room.
CREATE TABLE muc_avatars (
    room TEXT PRIMARY KEY REFERENCES muc_rooms (name) ON DELETE CASCADE,
    vcard TEXT NOT NULL,            -- <vCard xmlns='vcard-temp'>…</vCard>
    hash TEXT NOT NULL              -- hex SHA-1 of each PHOTO, comma-separated
);
