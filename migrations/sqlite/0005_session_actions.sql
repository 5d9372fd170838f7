-- The session action log; the same columns as PostgreSQL's (migrations/postgres/0005), with
-- SQLite types (times are text 'YYYY-MM-DD HH:MM:SS' in UTC, as in radacct). SQLite is one
-- node, so nothing reads these rows to coordinate; they are the log only.
CREATE TABLE IF NOT EXISTS session_actions (
	id		INTEGER PRIMARY KEY AUTOINCREMENT,
	radacctid	INTEGER NOT NULL,
	acctuniqueid	TEXT NOT NULL,
	username	TEXT,
	nasipaddress	TEXT,
	action		TEXT NOT NULL,
	method		TEXT NOT NULL,
	outcome		TEXT NOT NULL,
	detail		TEXT,
	actor		TEXT,
	node		TEXT NOT NULL,
	rtt_ms		INTEGER,
	requested_at	TEXT NOT NULL,
	finished_at	TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS session_actions_radacctid_idx ON session_actions (radacctid, id);
