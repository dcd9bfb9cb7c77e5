-- When an inbound subscription request began waiting, as the owner's roster
-- version at that moment (a per-account sequence): pending requests are
-- ordered by age, and one over the per-account cap refuses the oldest.
ALTER TABLE roster_items ADD COLUMN pending_since INTEGER;
UPDATE roster_items SET pending_since = version WHERE pending_in IS NOT NULL;
CREATE INDEX roster_items_pending ON roster_items (username, pending_since)
    WHERE pending_in IS NOT NULL;
