-- The worker: pipeline state on jobs, environments (the lock's mirror), built images.

ALTER TABLE jobs ADD COLUMN step TEXT NOT NULL DEFAULT 'queued';
ALTER TABLE jobs ADD COLUMN pinned TEXT;            -- JSON: refs pinned to SHAs
ALTER TABLE jobs ADD COLUMN plan TEXT;              -- JSON: the plan
ALTER TABLE jobs ADD COLUMN cancel_requested BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN started_at BIGINT;
ALTER TABLE jobs ADD COLUMN conclusion TEXT;        -- success | failure | cancelled | timed_out | superseded

CREATE TABLE environments (
    name           TEXT PRIMARY KEY,
    holder_job     BIGINT,
    held_since     BIGINT,
    held_until     BIGINT,
    dirty          BIGINT NOT NULL DEFAULT 0,
    last_job       BIGINT,
    updated_at     BIGINT NOT NULL
);

CREATE TABLE images (
    image      TEXT NOT NULL,
    tag        TEXT NOT NULL,
    inputs     TEXT NOT NULL,
    job_id     BIGINT NOT NULL,
    built_at   BIGINT NOT NULL,
    PRIMARY KEY (image, tag)
);
