-- Reporting on GitHub: one "sync" report per job (the live status comment,
-- check runs and deployment are rendered from the job's state when it is
-- sent), the GitHub objects deploybot created for a job, pinned PR heads.

-- A sync report is re-armed (version + 1) whenever its job changes; it is
-- marked sent only if no change came while it was being sent.
ALTER TABLE outbox ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX outbox_job_sync ON outbox (job_id) WHERE kind = 'sync';

-- The head commit each referenced PR was pinned to when the request was accepted.
ALTER TABLE job_pull_requests ADD COLUMN head_sha TEXT;

-- What deploybot created on GitHub for a job: `comment`, `check:<owner/repo>#<n>`,
-- `deployment`; `digest` is what was last sent, so unchanged state is not re-sent.
CREATE TABLE github_objects (
    job_id      BIGINT NOT NULL,
    name        TEXT NOT NULL,
    github_id   BIGINT NOT NULL,
    digest      TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (job_id, name)
);
CREATE INDEX github_objects_github_id ON github_objects (github_id);
