-- The signed erasure receipt of each tombstone (FORMAT.md, "Erasure
-- receipts"): set once, right after the erasure commits (or by the first
-- GetErasure if the process died in between), never changed.
ALTER TABLE tombstones ADD COLUMN receipt BYTEA;
