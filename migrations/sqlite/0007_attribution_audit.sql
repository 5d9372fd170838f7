-- The same as migrations/postgres/0007: one row per attribution query, never deleted.
CREATE TABLE IF NOT EXISTS attribution_audit (
	id		INTEGER PRIMARY KEY AUTOINCREMENT,
	actor		TEXT,
	role		TEXT NOT NULL,
	reseller_id	INTEGER,
	via		TEXT NOT NULL,
	query_ip	TEXT NOT NULL,
	query_at	TEXT NOT NULL,
	window_secs	INTEGER NOT NULL,
	results		INTEGER NOT NULL,
	truncated	INTEGER NOT NULL,
	radacctids	TEXT NOT NULL,
	node		TEXT,
	requested_at	TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attribution_audit_requested_idx ON attribution_audit (requested_at);
