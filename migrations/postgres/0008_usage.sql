-- The usage ledger (docs/ARCHITECTURE.md#usage): per subscriber (radacct.username), the octets
-- added in each UTC hour, written by the ingest writer in the transaction (or the one
-- statement) that writes the radacct rows, so it is exactly the sum of the row changes. Times
-- are epoch seconds (to_timestamp(hour) for a timestamp). usage_daily holds the same amounts by
-- UTC day, for top lists over long periods; the hour index serves the edges of such periods.
CREATE TABLE IF NOT EXISTS usage_hourly (
	username	text NOT NULL,
	hour		bigint NOT NULL,
	input_octets	bigint NOT NULL DEFAULT 0,
	output_octets	bigint NOT NULL DEFAULT 0,
	PRIMARY KEY (username, hour)
);
CREATE INDEX IF NOT EXISTS usage_hourly_hour_idx ON usage_hourly (hour);

CREATE TABLE IF NOT EXISTS usage_daily (
	day		bigint NOT NULL,
	username	text NOT NULL,
	input_octets	bigint NOT NULL DEFAULT 0,
	output_octets	bigint NOT NULL DEFAULT 0,
	PRIMARY KEY (day, username)
);

-- Subscribers over a fair-use threshold (docs/ARCHITECTURE.md#fair-use): one row from the
-- crossing until the period's reset has restored the rate. Inserting the row is what claims
-- the crossing, so of several nodes only one sends the throttling CoAs.
CREATE TABLE IF NOT EXISTS fair_use_throttles (
	username	text PRIMARY KEY,
	policy		text NOT NULL,
	-- The period that was exceeded, [period_start, period_end), epoch seconds.
	period_start	bigint NOT NULL,
	period_end	bigint NOT NULL,
	threshold_bytes	bigint NOT NULL,
	-- Input + output octets of the period when the crossing was seen.
	used_bytes	bigint NOT NULL,
	rate		text NOT NULL,
	restore_rate	text NOT NULL,
	throttled_since	bigint NOT NULL,
	-- node.name of the node that saw the crossing.
	node		text NOT NULL
);
CREATE INDEX IF NOT EXISTS fair_use_throttles_end_idx ON fair_use_throttles (period_end);
