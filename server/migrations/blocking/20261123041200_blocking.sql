-- Blocking Command (XEP-0191): the JIDs each account blocked.
CREATE TABLE blocklist (
    username TEXT NOT NULL,
    jid TEXT NOT NULL,
    PRIMARY KEY (username, jid)
);
