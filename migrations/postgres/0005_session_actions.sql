-- The session action log (docs/ARCHITECTURE.md#disconnect): one row per disconnect attempt
-- radacctd made (later also per CoA), written by the node that made it when the outcome is
-- known. Nodes sharing this database also read it to answer a disconnect another node has just
-- made instead of sending a second Disconnect-Request: the row is inserted in the transaction
-- that holds the session's advisory lock, so it becomes visible exactly when the lock is
-- released.
--
-- No foreign key to radacct: radacct is FreeRADIUS's table, and the archiver deletes the
-- action rows of the sessions it moves to radacct_archive in the same transaction.
CREATE TABLE IF NOT EXISTS session_actions (
	id		bigserial PRIMARY KEY,
	radacctid	bigint NOT NULL,
	acctuniqueid	text NOT NULL,
	username	text,
	nasipaddress	text,
	-- 'disconnect' (CoA changes will add their own).
	action		text NOT NULL,
	-- How the outcome was reached: 'coa', 'api', or 'none' (nothing was sent).
	method		text NOT NULL,
	-- 'ack', 'removed', 'already_closed', 'refused', 'unreachable'.
	outcome		text NOT NULL,
	-- JSON with what reproduces the answer: row_closed, error_cause, detail.
	detail		text,
	-- The API token's subject, when the call came through the API with one.
	actor		text,
	-- node.name of the node that made the attempt.
	node		text NOT NULL,
	-- Milliseconds from the start of the attempt to its outcome (NULL: nothing was sent).
	rtt_ms		bigint,
	requested_at	timestamp with time zone NOT NULL,
	finished_at	timestamp with time zone NOT NULL
);
CREATE INDEX IF NOT EXISTS session_actions_radacctid_idx ON session_actions (radacctid, id);
