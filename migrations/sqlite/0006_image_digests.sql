-- The registry decides reuse; deploybot keeps the history: the digest each
-- build pushed (what was deployed), beside who built it, when, from what.
ALTER TABLE images ADD COLUMN digest TEXT;
