-- Messages stored for accounts with no available resource (XEP-0160).
CREATE TABLE offline_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL,
    stanza TEXT NOT NULL,
    stored_at INTEGER NOT NULL
);
CREATE INDEX offline_by_user ON offline_messages (username, id);
