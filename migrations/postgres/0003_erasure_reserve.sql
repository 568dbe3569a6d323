-- The erasure reserve: RESERVE_BYTES of incompressible filler that the
-- store keeps in the database's own tablespace and gives up (TRUNCATE,
-- which returns the file's space to the file system at commit) when an
-- erasure finds the disk full, so that uploads can never use up the room
-- an erasure needs. SQLite's store keeps the same reserve as a file
-- beside keys.db. Stored PLAIN: neither compressed nor moved out of line.
CREATE TABLE erasure_reserve (filler BYTEA NOT NULL);
ALTER TABLE erasure_reserve ALTER COLUMN filler SET STORAGE PLAIN;
