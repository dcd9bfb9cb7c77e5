-- PEP (XEP-0163): each account's personal pubsub nodes and their items.
-- Deleting an account deletes its nodes, and a node's deletion its items.
CREATE TABLE pep_nodes (
    username TEXT NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    node TEXT NOT NULL,
    access_model TEXT NOT NULL,
    max_items INTEGER NOT NULL,
    persist_items INTEGER NOT NULL,
    send_last TEXT NOT NULL,
    -- pubsub#roster_groups_allowed, one group per line.
    roster_groups TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (username, node)
);

-- seq orders items by publication: a republished id gets a new, higher seq.
CREATE TABLE pep_items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL,
    node TEXT NOT NULL,
    item_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    publisher TEXT NOT NULL,
    UNIQUE (username, node, item_id),
    FOREIGN KEY (username, node) REFERENCES pep_nodes (username, node) ON DELETE CASCADE
);
CREATE INDEX pep_items_by_node ON pep_items (username, node, seq);
