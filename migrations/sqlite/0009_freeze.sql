-- An operator's freeze of an environment (`deploybot admin freeze`, the
-- API): no new deployment takes it until `frozen_until` (unix ms).
ALTER TABLE environments ADD COLUMN frozen_until BIGINT;
ALTER TABLE environments ADD COLUMN frozen_reason TEXT;
ALTER TABLE environments ADD COLUMN frozen_by TEXT;
