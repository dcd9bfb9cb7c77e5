-- Explicit subscriptions (XEP-0060 §6.1) to PEP nodes, for entities that do not
-- share presence with the owner (e.g. to follow a stranger's OMEMO device list).
CREATE TABLE pep_subscriptions (
    username TEXT NOT NULL,
    node TEXT NOT NULL,
    jid TEXT NOT NULL,
    PRIMARY KEY (username, node, jid),
    FOREIGN KEY (username, node) REFERENCES pep_nodes (username, node) ON DELETE CASCADE
);
