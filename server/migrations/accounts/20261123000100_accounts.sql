-- Accounts and their SCRAM credentials (never the password).
CREATE TABLE accounts (
    username TEXT PRIMARY KEY NOT NULL,
    sha1_salt BLOB NOT NULL,
    sha1_iterations INTEGER NOT NULL,
    sha1_stored_key BLOB NOT NULL,
    sha1_server_key BLOB NOT NULL,
    sha256_salt BLOB NOT NULL,
    sha256_iterations INTEGER NOT NULL,
    sha256_stored_key BLOB NOT NULL,
    sha256_server_key BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

-- Server-wide secrets (e.g. the key that derives fake SCRAM salts for unknown users).
CREATE TABLE server_secrets (
    name TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
);
