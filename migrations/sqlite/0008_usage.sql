-- The same as migrations/postgres/0008: the usage ledger and the fair-use throttle state.
-- Times are epoch seconds. The ledger tables are WITHOUT ROWID: stored in primary-key order, so
-- a subscriber's month of hours is read from adjacent pages however the hours were written.
CREATE TABLE IF NOT EXISTS usage_hourly (
	username	TEXT NOT NULL,
	hour		INTEGER NOT NULL,
	input_octets	INTEGER NOT NULL DEFAULT 0,
	output_octets	INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (username, hour)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_hourly_hour_idx ON usage_hourly (hour);

CREATE TABLE IF NOT EXISTS usage_daily (
	day		INTEGER NOT NULL,
	username	TEXT NOT NULL,
	input_octets	INTEGER NOT NULL DEFAULT 0,
	output_octets	INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (day, username)
) WITHOUT ROWID;

-- Subscribers over a fair-use threshold (docs/ARCHITECTURE.md#fair-use): one row from the
-- crossing until the period's reset has restored the rate. Inserting the row is what claims
-- the crossing, so of several nodes only one sends the throttling CoAs.
CREATE TABLE IF NOT EXISTS fair_use_throttles (
	username	TEXT PRIMARY KEY,
	policy		TEXT NOT NULL,
	-- The period that was exceeded, [period_start, period_end), epoch seconds.
	period_start	INTEGER NOT NULL,
	period_end	INTEGER NOT NULL,
	threshold_bytes	INTEGER NOT NULL,
	-- Input + output octets of the period when the crossing was seen.
	used_bytes	INTEGER NOT NULL,
	rate		TEXT NOT NULL,
	restore_rate	TEXT NOT NULL,
	throttled_since	INTEGER NOT NULL,
	-- node.name of the node that saw the crossing.
	node		TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS fair_use_throttles_end_idx ON fair_use_throttles (period_end);
