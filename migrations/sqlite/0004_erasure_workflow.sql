-- The deletion service's workflow: erasures with a cooling-off window,
-- and the erasure feed.
--
-- A scheduled erasure restricts its user at once (content calls fail
-- ERASURE_PENDING) and is carried out at due_ms by whichever process's
-- pass sees it first; the erasure deletes its row in the transaction that
-- writes the tombstone. A cancelled one stays, state 'cancelled', so that
-- GetErasure can say so. request_id: the EraseUsers batch (or call) that
-- asked, so a retried batch after a cancel does not schedule again.
CREATE TABLE scheduled_erasures (
    pseudonym TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    due_ms INTEGER NOT NULL,
    requested_at_ms INTEGER NOT NULL,
    requested_by TEXT NOT NULL,
    request_id TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX scheduled_erasures_due ON scheduled_erasures (state, due_ms);
-- The erasure feed: one row per event, cursor strictly increasing in
-- commit order (assigned under the audit lock, which every transaction
-- that appends an event holds to its commit).
CREATE TABLE erasure_events (
    cursor INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    pseudonym TEXT NOT NULL,
    due_ms INTEGER NOT NULL
);
CREATE INDEX erasure_events_at ON erasure_events (at_ms);
