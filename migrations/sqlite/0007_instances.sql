-- Processes and their heartbeats. Every claim names the instance that made
-- it (`owner`); a claim whose owner stopped beating is free at once, while a
-- live owner keeps it.
CREATE TABLE instances (
    id            TEXT PRIMARY KEY,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL,
    every_ms      BIGINT NOT NULL      -- how often it beats: gone after 3 missed beats
);
ALTER TABLE triggers ADD COLUMN owner TEXT;
ALTER TABLE outbox ADD COLUMN owner TEXT;
ALTER TABLE jobs ADD COLUMN owner TEXT;

-- Chores one replica does per period (catching up on deliveries, reconciling
-- labelled PRs): when each is due next and when it last succeeded.
CREATE TABLE chores (
    name     TEXT PRIMARY KEY,
    due_at   BIGINT NOT NULL,
    done_at  BIGINT
);
