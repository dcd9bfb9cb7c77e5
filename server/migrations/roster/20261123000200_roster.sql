-- RFC 6121 rosters. subscription: none|to|from|both; ask: pending outbound request;
-- approved: pre-approval (§3.4); pending_in: inbound request awaiting the user.
CREATE TABLE roster_items (
    username TEXT NOT NULL,
    contact TEXT NOT NULL,
    name TEXT,
    subscription TEXT NOT NULL DEFAULT 'none',
    ask INTEGER NOT NULL DEFAULT 0,
    approved INTEGER NOT NULL DEFAULT 0,
    pending_in TEXT,
    in_roster INTEGER NOT NULL DEFAULT 1,
    groups TEXT NOT NULL DEFAULT '',
    version INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (username, contact)
);

-- Roster version counter per user (XEP-0237).
CREATE TABLE roster_versions (
    username TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL
);
