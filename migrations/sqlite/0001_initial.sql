-- The key store's schema as sealgate made it before schema migrations:
-- every statement is IF NOT EXISTS, so a keys.db made by an older build is
-- adopted unchanged. Columns added since (jobs' leases, the audit chain) are
-- added by SqliteKeyStore::open to tables made before them.
CREATE TABLE IF NOT EXISTS keks (
    shard INTEGER NOT NULL,
    version INTEGER NOT NULL,
    master_version INTEGER NOT NULL,
    wrapped BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (shard, version)
);
CREATE TABLE IF NOT EXISTS user_keys (
    pseudonym TEXT NOT NULL,
    version INTEGER NOT NULL,
    shard INTEGER NOT NULL,
    kek_version INTEGER NOT NULL,
    wrapped BLOB NOT NULL,
    state TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (pseudonym, version)
);
CREATE TABLE IF NOT EXISTS tombstones (
    pseudonym TEXT PRIMARY KEY,
    erased_at_ms INTEGER NOT NULL,
    destroyed_versions TEXT NOT NULL,
    gc_job_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    pseudonym TEXT,
    state TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    params TEXT NOT NULL DEFAULT '',
    total INTEGER NOT NULL DEFAULT 0,
    cursor TEXT NOT NULL DEFAULT '',
    owner TEXT,
    lease_until_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs (state) WHERE state IN ('pending', 'running');
CREATE TABLE IF NOT EXISTS requests (
    pseudonym TEXT NOT NULL,
    request BLOB NOT NULL,
    space TEXT NOT NULL,
    requested_id TEXT NOT NULL,
    object_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (pseudonym, request)
);
CREATE INDEX IF NOT EXISTS requests_at ON requests (at_ms);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at_ms);
CREATE INDEX IF NOT EXISTS user_keys_by_kek ON user_keys (shard, kek_version);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS legal_holds (
    pseudonym TEXT NOT NULL,
    case_ref TEXT NOT NULL,
    placed_at_ms INTEGER NOT NULL,
    placed_by TEXT NOT NULL,
    PRIMARY KEY (pseudonym, case_ref)
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    action TEXT NOT NULL,
    pseudonym TEXT,
    detail TEXT NOT NULL
);
