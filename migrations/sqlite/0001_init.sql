-- deploybot schema (SQLite). Times are unix milliseconds (BIGINT) so that
-- both backends store and compare them the same way.

CREATE TABLE deliveries (
    id           TEXT PRIMARY KEY,          -- X-GitHub-Delivery
    event        TEXT NOT NULL,
    action       TEXT,
    received_at  BIGINT NOT NULL,
    outcome      TEXT NOT NULL
);

-- Events that need GitHub's API before they become jobs (authorisation).
CREATE TABLE triggers (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id     TEXT REFERENCES deliveries(id),
    payload         TEXT NOT NULL,          -- JSON
    state           TEXT NOT NULL,          -- pending | done
    attempts        BIGINT NOT NULL DEFAULT 0,
    run_after       BIGINT NOT NULL,
    locked_until    BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX triggers_pending ON triggers (state, run_after);

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    state            TEXT NOT NULL,         -- queued | running | succeeded | failed | cancelled | superseded
    source           TEXT NOT NULL,         -- comment | label | synchronize | cli | rerun
    request          TEXT NOT NULL,         -- JSON of the parsed request
    requested_by     TEXT NOT NULL,
    repo             TEXT NOT NULL,         -- where it was asked (owner/name)
    number           BIGINT,                -- PR or issue number
    is_pull_request  BIGINT NOT NULL,
    comment_id       BIGINT,
    installation_id  BIGINT,
    delivery_id      TEXT,
    environment      TEXT NOT NULL,
    base             TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    max_attempts     BIGINT NOT NULL DEFAULT 3,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    heartbeat_at     BIGINT,
    run_after        BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    error            TEXT
);
CREATE INDEX jobs_state ON jobs (state, run_after, id);
CREATE INDEX jobs_env_state ON jobs (environment, state);

-- Every PR a job references (the originating PR included).
CREATE TABLE job_pull_requests (
    job_id  BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    repo    TEXT NOT NULL,
    number  BIGINT NOT NULL,
    PRIMARY KEY (job_id, repo, number)
);
CREATE INDEX job_pull_requests_pr ON job_pull_requests (repo, number);

CREATE TABLE job_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id   BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    at       BIGINT NOT NULL,
    step     TEXT NOT NULL,
    message  TEXT NOT NULL
);
CREATE INDEX job_events_job ON job_events (job_id, id);

-- Reports to GitHub, written in the same transaction as what they report.
CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        BIGINT,
    kind          TEXT NOT NULL,
    payload       TEXT NOT NULL,            -- JSON
    state         TEXT NOT NULL,            -- pending | sent | dead
    attempts      BIGINT NOT NULL DEFAULT 0,
    run_after     BIGINT NOT NULL,
    locked_until  BIGINT,
    last_error    TEXT,
    created_at    BIGINT NOT NULL,
    sent_at       BIGINT
);
CREATE INDEX outbox_pending ON outbox (state, run_after, id);

-- A refusal is answered once per PR (or issue) and user.
CREATE TABLE refusals (
    repo        TEXT NOT NULL,
    number      BIGINT NOT NULL,
    login       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (repo, number, login)
);

-- Which App installation covers which repository.
CREATE TABLE installations (
    repo             TEXT PRIMARY KEY,
    installation_id  BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
