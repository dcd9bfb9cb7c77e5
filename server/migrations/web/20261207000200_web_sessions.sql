-- Browsers signed in to the web pod. The cookie holds a random token; only
-- SHA-256(token) is kept, so a copy of the database signs no one in.
CREATE TABLE web_sessions (
    token_hash BLOB PRIMARY KEY NOT NULL,
    -- A second random id naming the session on the "your browsers" page and in
    -- its sign-out buttons (never the token).
    handle TEXT NOT NULL UNIQUE,
    username TEXT NOT NULL,
    -- 1: "remember this browser" (a cookie that outlives the browser).
    remember INTEGER NOT NULL,
    user_agent TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX web_sessions_by_user ON web_sessions (username);
