-- The attribution audit (docs/ARCHITECTURE.md#attribution): one row per "who had this address
-- at that time?" query, from the API or `radacctd attribution`, written before the answer is
-- given. radacctd never deletes these rows.
--
-- actor:        the API token's sub, or cli:<operating-system user>.
-- role:         admin, reseller (the token's role) or cli.
-- reseller_id:  the token's reseller, for a reseller.
-- via:          api or cli.
-- query_ip:     the address or block asked about, as the query used it (host bits cleared,
--               an IPv4-mapped IPv6 address as its IPv4 address).
-- query_at:     the moment asked about; window_secs: the skew allowed on each side of it.
-- results:      sessions in the answer; truncated: more matched than the answer's limit.
-- radacctids:   JSON array of the answer's radacctids, in its order.
-- node:         node.name of the daemon that answered (NULL from the CLI).
CREATE TABLE IF NOT EXISTS attribution_audit (
	id		bigserial PRIMARY KEY,
	actor		text,
	role		text NOT NULL,
	reseller_id	bigint,
	via		text NOT NULL,
	query_ip	text NOT NULL,
	query_at	timestamp with time zone NOT NULL,
	window_secs	bigint NOT NULL,
	results		bigint NOT NULL,
	truncated	boolean NOT NULL,
	radacctids	text NOT NULL,
	node		text,
	requested_at	timestamp with time zone NOT NULL
);
CREATE INDEX IF NOT EXISTS attribution_audit_requested_idx ON attribution_audit (requested_at);
