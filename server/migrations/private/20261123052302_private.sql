-- Private XML storage (XEP-0049): one element per account and namespace.
CREATE TABLE private_xml (
    username TEXT NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    namespace TEXT NOT NULL,
    xml TEXT NOT NULL,
    PRIMARY KEY (username, namespace)
);
