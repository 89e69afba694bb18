-- Replays and event streams (issue 13).

-- A delivery's content is processed once, whatever its X-GitHub-Delivery
-- (which is not signed): the SHA-256 of its body, and for a comment command
-- `comment:<id>:<updated_at>`, are each unique.
ALTER TABLE deliveries ADD COLUMN body_sha256 TEXT;
ALTER TABLE deliveries ADD COLUMN content_key TEXT;
CREATE UNIQUE INDEX deliveries_body_sha256 ON deliveries (body_sha256);
CREATE UNIQUE INDEX deliveries_content_key ON deliveries (content_key);

-- Deliveries `deploybot admin redeliver` asked GitHub to send again: an old
-- command among them is judged by when GitHub first tried to deliver it.
CREATE TABLE redeliveries (
    delivery_id       TEXT PRIMARY KEY,     -- X-GitHub-Delivery (GitHub's guid)
    event             TEXT NOT NULL,
    first_attempt_at  BIGINT NOT NULL,
    requested_at      BIGINT NOT NULL
);

-- A job's events are numbered 1, 2, 3... in the order they commit: the
-- number is taken from the job's counter row, locked until the commit.
CREATE TABLE job_event_counters (
    job_id  BIGINT PRIMARY KEY,
    last    BIGINT NOT NULL
);
ALTER TABLE job_events ADD COLUMN seq BIGINT;
UPDATE job_events SET seq = (SELECT COUNT(*) FROM job_events e
                             WHERE e.job_id = job_events.job_id AND e.id <= job_events.id);
INSERT INTO job_event_counters (job_id, last)
    SELECT job_id, MAX(seq) FROM job_events GROUP BY job_id;
CREATE UNIQUE INDEX job_events_job_seq ON job_events (job_id, seq);
