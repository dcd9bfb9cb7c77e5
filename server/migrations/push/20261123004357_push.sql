-- Push notification registrations (XEP-0357): which app server (jid, node)
-- to notify for an account, with the publish-options form the app gave
-- (it usually holds a secret the app server checks), serialised.
CREATE TABLE push_registrations (
    username TEXT NOT NULL,
    jid TEXT NOT NULL,
    node TEXT NOT NULL,
    options TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (username, jid, node)
);
