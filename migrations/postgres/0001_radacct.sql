-- radacctd schema for PostgreSQL.
--
-- radacct, nas and their indexes are FreeRADIUS 3.2's (mods-config/sql/main/postgresql/schema.sql),
-- same names and types. Everything uses IF NOT EXISTS so that this migration is a no-op on a
-- database where FreeRADIUS's schema.sql was loaded first. Nothing FreeRADIUS or the panel
-- created is ever dropped or renamed.

CREATE TABLE IF NOT EXISTS radacct (
	RadAcctId		bigserial PRIMARY KEY,
	AcctSessionId		text NOT NULL,
	AcctUniqueId		text NOT NULL UNIQUE,
	UserName		text,
	Realm			text,
	NASIPAddress		inet NOT NULL,
	NASPortId		text,
	NASPortType		text,
	AcctStartTime		timestamp with time zone,
	AcctUpdateTime		timestamp with time zone,
	AcctStopTime		timestamp with time zone,
	AcctInterval		bigint,
	AcctSessionTime		bigint,
	AcctAuthentic		text,
	ConnectInfo_start	text,
	ConnectInfo_stop	text,
	AcctInputOctets		bigint,
	AcctOutputOctets	bigint,
	CalledStationId		text,
	CallingStationId	text,
	AcctTerminateCause	text,
	ServiceType		text,
	FramedProtocol		text,
	FramedIPAddress		inet,
	FramedIPv6Address	inet,
	FramedIPv6Prefix	inet,
	FramedInterfaceId	text,
	DelegatedIPv6Prefix	inet,
	Class			text
);

-- FreeRADIUS's own indexes: open sessions by key, bulk close by NAS, statistics, Class.
CREATE INDEX IF NOT EXISTS radacct_active_session_idx ON radacct (AcctUniqueId) WHERE AcctStopTime IS NULL;
CREATE INDEX IF NOT EXISTS radacct_bulk_close ON radacct (NASIPAddress, AcctStartTime) WHERE AcctStopTime IS NULL;
CREATE INDEX IF NOT EXISTS radacct_start_user_idx ON radacct (AcctStartTime, UserName);
CREATE INDEX IF NOT EXISTS radacct_calss_idx ON radacct (Class);

-- Closed sessions older than the retention window move here (same columns; ids kept).
CREATE TABLE IF NOT EXISTS radacct_archive (
	RadAcctId		bigint PRIMARY KEY,
	AcctSessionId		text NOT NULL,
	AcctUniqueId		text NOT NULL,
	UserName		text,
	Realm			text,
	NASIPAddress		inet NOT NULL,
	NASPortId		text,
	NASPortType		text,
	AcctStartTime		timestamp with time zone,
	AcctUpdateTime		timestamp with time zone,
	AcctStopTime		timestamp with time zone,
	AcctInterval		bigint,
	AcctSessionTime		bigint,
	AcctAuthentic		text,
	ConnectInfo_start	text,
	ConnectInfo_stop	text,
	AcctInputOctets		bigint,
	AcctOutputOctets	bigint,
	CalledStationId		text,
	CallingStationId	text,
	AcctTerminateCause	text,
	ServiceType		text,
	FramedProtocol		text,
	FramedIPAddress		inet,
	FramedIPv6Address	inet,
	FramedIPv6Prefix	inet,
	FramedInterfaceId	text,
	DelegatedIPv6Prefix	inet,
	Class			text
);
CREATE INDEX IF NOT EXISTS radacct_archive_start_idx ON radacct_archive (AcctStartTime);

-- FreeRADIUS's NAS table, plus what disconnect needs (CoA port, RouterOS API credentials).
CREATE TABLE IF NOT EXISTS nas (
	id			serial PRIMARY KEY,
	nasname			text NOT NULL,
	shortname		text NOT NULL,
	type			text NOT NULL DEFAULT 'other',
	ports			integer,
	secret			text NOT NULL,
	server			text,
	community		text,
	description		text
);
ALTER TABLE nas ADD COLUMN IF NOT EXISTS coa_port integer NOT NULL DEFAULT 1700;
ALTER TABLE nas ADD COLUMN IF NOT EXISTS api_port integer;
ALTER TABLE nas ADD COLUMN IF NOT EXISTS api_username text;
ALTER TABLE nas ADD COLUMN IF NOT EXISTS api_password text;

-- The panel's reseller tree and subscribers (created only when the panel has not).
CREATE TABLE IF NOT EXISTS resellers (
	id			bigserial PRIMARY KEY,
	parent_id		bigint REFERENCES resellers (id),
	name			text NOT NULL
);
CREATE TABLE IF NOT EXISTS subscribers (
	id			bigserial PRIMARY KEY,
	username		text NOT NULL UNIQUE,
	reseller_id		bigint REFERENCES resellers (id),
	is_online		boolean NOT NULL DEFAULT false
);
