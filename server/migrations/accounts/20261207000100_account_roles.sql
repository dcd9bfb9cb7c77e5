-- Who may run the box: 'admin' (the household's admin pages) or 'member'.
ALTER TABLE accounts ADD COLUMN role TEXT NOT NULL DEFAULT 'member'
    CHECK (role IN ('admin', 'member'));
