-- The PostgreSQL key store's schema (src/keys/postgres.rs): the same tables
-- and columns as SQLite's, every integer a BIGINT, key material BYTEA;
-- the text columns that order pages (pseudonyms, case references, job ids,
-- settings keys) compare bytes, as SQLite does, whatever the database's
-- collation.
CREATE TABLE keks (
    shard BIGINT NOT NULL,
    version BIGINT NOT NULL,
    master_version BIGINT NOT NULL,
    wrapped BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (shard, version)
);
CREATE TABLE user_keys (
    pseudonym TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    shard BIGINT NOT NULL,
    kek_version BIGINT NOT NULL,
    wrapped BYTEA NOT NULL,
    state TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (pseudonym, version)
);
CREATE INDEX user_keys_by_kek ON user_keys (shard, kek_version);
CREATE TABLE tombstones (
    pseudonym TEXT PRIMARY KEY,
    erased_at_ms BIGINT NOT NULL,
    destroyed_versions TEXT NOT NULL,
    gc_job_id TEXT NOT NULL
);
CREATE TABLE jobs (
    id TEXT COLLATE "C" PRIMARY KEY,
    kind TEXT NOT NULL,
    pseudonym TEXT,
    state TEXT NOT NULL,
    done BIGINT NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    params TEXT NOT NULL DEFAULT '',
    total BIGINT NOT NULL DEFAULT 0,
    cursor TEXT NOT NULL DEFAULT '',
    owner TEXT,
    lease_until_ms BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX jobs_unfinished ON jobs (state) WHERE state IN ('pending', 'running');
CREATE INDEX jobs_created ON jobs (created_at_ms);
CREATE TABLE requests (
    pseudonym TEXT NOT NULL,
    request BYTEA NOT NULL,
    space TEXT NOT NULL,
    requested_id TEXT NOT NULL,
    object_id TEXT NOT NULL,
    size BIGINT NOT NULL,
    etag TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (pseudonym, request)
);
CREATE INDEX requests_at ON requests (at_ms);
CREATE TABLE meta (
    key TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE legal_holds (
    pseudonym TEXT COLLATE "C" NOT NULL,
    case_ref TEXT COLLATE "C" NOT NULL,
    placed_at_ms BIGINT NOT NULL,
    placed_by TEXT NOT NULL,
    PRIMARY KEY (pseudonym, case_ref)
);
CREATE TABLE audit (
    id BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    principal TEXT NOT NULL,
    action TEXT NOT NULL,
    pseudonym TEXT,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_by_pseudonym ON audit (pseudonym, id);
