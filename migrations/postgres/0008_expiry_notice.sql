-- The hold expiry each environment's holder was told about in advance (one
-- notice per expiry: an extension makes a new one due).
ALTER TABLE environments ADD COLUMN warned_until BIGINT;
