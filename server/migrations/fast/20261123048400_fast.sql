-- FAST (XEP-0484) tokens: at most two per (account, client) — the 'current'
-- token and a 'new' one issued but not used yet. Only SHA-256(token) is kept.
CREATE TABLE fast_tokens (
    username TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    slot TEXT NOT NULL CHECK (slot IN ('new', 'current')),
    token_hash BLOB NOT NULL,
    mechanism TEXT NOT NULL,
    software TEXT NOT NULL DEFAULT '',
    device TEXT NOT NULL DEFAULT '',
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    last_count INTEGER NOT NULL DEFAULT 0,
    last_used INTEGER,
    PRIMARY KEY (username, agent_id, slot)
);
