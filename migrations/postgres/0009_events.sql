-- Session events (docs/EVENTS.md): the outbox of what changed, written in the same transaction
-- (or the same statement) as the change that caused it, and the stream read from it by the
-- Server-Sent Events endpoint and the webhooks.
--
-- Writers append to event_queue only. Its seq orders a writer's own events but not those of
-- concurrent transactions by commit, so readers never see it: the sequencer
-- (`events::sequencer`, on whichever node holds its advisory lock) moves committed queue rows
-- into events, numbering them from event_sequence.last + 1 in seq order, in one transaction
-- that holds the lock until it commits. Ids are therefore given in commit order, without gaps,
-- and a reader that has seen id N has seen every event numbered up to N for good.
CREATE TABLE IF NOT EXISTS event_queue (
	seq		bigserial PRIMARY KEY,
	type		text NOT NULL,
	-- Epoch seconds: when the change happened (the event time of the packet that caused it).
	time		bigint NOT NULL,
	username	text NOT NULL DEFAULT '',
	nasipaddress	text NOT NULL DEFAULT '',
	acctuniqueid	text NOT NULL DEFAULT '',
	radacctid	bigint,
	-- JSON object: the type's fields (docs/EVENTS.md#types).
	data		text NOT NULL
);

CREATE TABLE IF NOT EXISTS events (
	id		bigint PRIMARY KEY,
	type		text NOT NULL,
	time		bigint NOT NULL,
	username	text NOT NULL DEFAULT '',
	nasipaddress	text NOT NULL DEFAULT '',
	acctuniqueid	text NOT NULL DEFAULT '',
	radacctid	bigint,
	data		text NOT NULL,
	-- Epoch seconds: when the sequencer numbered it (retention is counted from here).
	created		bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS events_created_idx ON events (created);

-- The last id given; one row.
CREATE TABLE IF NOT EXISTS event_sequence (
	one		boolean PRIMARY KEY DEFAULT true CHECK (one),
	last		bigint NOT NULL
);
INSERT INTO event_sequence (one, last) VALUES (true, 0) ON CONFLICT DO NOTHING;

-- Per webhook endpoint (events.webhooks[].name): the last event id it acknowledged.
CREATE TABLE IF NOT EXISTS webhook_cursors (
	endpoint	text PRIMARY KEY,
	last_id		bigint NOT NULL,
	-- Epoch seconds of the last acknowledged delivery.
	updated		bigint NOT NULL
);
