-- The same as migrations/postgres/0006: what was sent, the NAS's Error-Cause, and the action
-- rows of archived sessions.
ALTER TABLE session_actions ADD COLUMN request TEXT;
ALTER TABLE session_actions ADD COLUMN error_cause INTEGER;

CREATE TABLE IF NOT EXISTS session_actions_archive (
	id		INTEGER PRIMARY KEY,
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
	finished_at	TEXT NOT NULL,
	request		TEXT,
	error_cause	INTEGER
);
CREATE INDEX IF NOT EXISTS session_actions_archive_radacctid_idx
	ON session_actions_archive (radacctid, id);
