-- Deploy requests that wait for a permitted user to confirm their exact
-- commits (a PR by an author without permission, or a comment processed
-- long after it was written). Nothing is queued until then.
CREATE TABLE confirmations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    state        TEXT NOT NULL,       -- waiting, confirmed, expired
    payload      TEXT NOT NULL,       -- the request to queue once confirmed (JSON)
    repo         TEXT NOT NULL,       -- where the question was asked
    number       BIGINT NOT NULL,
    question     BIGINT NOT NULL,     -- the outbox row of the question comment
    comment_id   BIGINT,              -- the question's GitHub comment, once found
    expires_at   BIGINT NOT NULL,
    check_after  BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX confirmations_due ON confirmations (state, check_after);
