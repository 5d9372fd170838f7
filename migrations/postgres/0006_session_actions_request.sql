-- The action log records what was sent and the NAS's Error-Cause, and keeps the rows of
-- archived sessions (docs/ARCHITECTURE.md#session-control).
--
-- request:     JSON object of the attributes sent beyond the session's identification
--              (a CoA's changes; NULL for a disconnect).
-- error_cause: the Error-Cause of a Disconnect-NAK or CoA-NAK, when it carried one.
ALTER TABLE session_actions ADD COLUMN IF NOT EXISTS request text;
ALTER TABLE session_actions ADD COLUMN IF NOT EXISTS error_cause integer;

-- The archiver moves the action rows of the sessions it moves to radacct_archive here, in the
-- same transaction, keeping their ids.
CREATE TABLE IF NOT EXISTS session_actions_archive (
	id		bigint PRIMARY KEY,
	radacctid	bigint NOT NULL,
	acctuniqueid	text NOT NULL,
	username	text,
	nasipaddress	text,
	action		text NOT NULL,
	method		text NOT NULL,
	outcome		text NOT NULL,
	detail		text,
	actor		text,
	node		text NOT NULL,
	rtt_ms		bigint,
	requested_at	timestamp with time zone NOT NULL,
	finished_at	timestamp with time zone NOT NULL,
	request		text,
	error_cause	integer
);
CREATE INDEX IF NOT EXISTS session_actions_archive_radacctid_idx
	ON session_actions_archive (radacctid, id);
