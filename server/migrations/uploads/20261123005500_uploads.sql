-- HTTP File Upload (XEP-0363): one row per stored file. The file itself is
-- data_dir/uploads/files/<id>; the row is written after the file is complete.
CREATE TABLE uploads (
    id           TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    filename     TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL,
    created      INTEGER NOT NULL
);
CREATE INDEX uploads_owner ON uploads (owner);
CREATE INDEX uploads_created ON uploads (created);
