-- The same as migrations/postgres/0009: the session events outbox (docs/EVENTS.md). Times are
-- epoch seconds.
CREATE TABLE IF NOT EXISTS event_queue (
	seq		INTEGER PRIMARY KEY AUTOINCREMENT,
	type		TEXT NOT NULL,
	time		INTEGER NOT NULL,
	username	TEXT NOT NULL DEFAULT '',
	nasipaddress	TEXT NOT NULL DEFAULT '',
	acctuniqueid	TEXT NOT NULL DEFAULT '',
	radacctid	INTEGER,
	data		TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS events (
	id		INTEGER PRIMARY KEY,
	type		TEXT NOT NULL,
	time		INTEGER NOT NULL,
	username	TEXT NOT NULL DEFAULT '',
	nasipaddress	TEXT NOT NULL DEFAULT '',
	acctuniqueid	TEXT NOT NULL DEFAULT '',
	radacctid	INTEGER,
	data		TEXT NOT NULL,
	created		INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_created_idx ON events (created);

CREATE TABLE IF NOT EXISTS event_sequence (
	one		INTEGER PRIMARY KEY DEFAULT 1 CHECK (one = 1),
	last		INTEGER NOT NULL
);
INSERT OR IGNORE INTO event_sequence (one, last) VALUES (1, 0);

CREATE TABLE IF NOT EXISTS webhook_cursors (
	endpoint	TEXT PRIMARY KEY,
	last_id		INTEGER NOT NULL,
	updated		INTEGER NOT NULL
);
