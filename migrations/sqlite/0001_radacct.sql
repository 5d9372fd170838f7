-- radacctd schema for the embedded SQLite store.
--
-- Same tables and columns as the PostgreSQL schema (FreeRADIUS 3.2's radacct and nas), with
-- SQLite types: addresses are text in PostgreSQL's inet output form, times are text
-- 'YYYY-MM-DD HH:MM:SS' in UTC (what SQLite's date functions read and write).

CREATE TABLE IF NOT EXISTS radacct (
	radacctid		INTEGER PRIMARY KEY AUTOINCREMENT,
	acctsessionid		TEXT NOT NULL,
	acctuniqueid		TEXT NOT NULL UNIQUE,
	username		TEXT,
	realm			TEXT,
	nasipaddress		TEXT NOT NULL,
	nasportid		TEXT,
	nasporttype		TEXT,
	acctstarttime		TEXT,
	acctupdatetime		TEXT,
	acctstoptime		TEXT,
	acctinterval		INTEGER,
	acctsessiontime		INTEGER,
	acctauthentic		TEXT,
	connectinfo_start	TEXT,
	connectinfo_stop	TEXT,
	acctinputoctets		INTEGER,
	acctoutputoctets	INTEGER,
	calledstationid		TEXT,
	callingstationid	TEXT,
	acctterminatecause	TEXT,
	servicetype		TEXT,
	framedprotocol		TEXT,
	framedipaddress		TEXT,
	framedipv6address	TEXT,
	framedipv6prefix	TEXT,
	framedinterfaceid	TEXT,
	delegatedipv6prefix	TEXT,
	class			TEXT
);
CREATE INDEX IF NOT EXISTS radacct_active_session_idx ON radacct (acctuniqueid) WHERE acctstoptime IS NULL;
CREATE INDEX IF NOT EXISTS radacct_bulk_close ON radacct (nasipaddress, acctstarttime) WHERE acctstoptime IS NULL;
CREATE INDEX IF NOT EXISTS radacct_start_user_idx ON radacct (acctstarttime, username);
CREATE INDEX IF NOT EXISTS radacct_calss_idx ON radacct (class);

CREATE TABLE IF NOT EXISTS radacct_archive (
	radacctid		INTEGER PRIMARY KEY,
	acctsessionid		TEXT NOT NULL,
	acctuniqueid		TEXT NOT NULL,
	username		TEXT,
	realm			TEXT,
	nasipaddress		TEXT NOT NULL,
	nasportid		TEXT,
	nasporttype		TEXT,
	acctstarttime		TEXT,
	acctupdatetime		TEXT,
	acctstoptime		TEXT,
	acctinterval		INTEGER,
	acctsessiontime		INTEGER,
	acctauthentic		TEXT,
	connectinfo_start	TEXT,
	connectinfo_stop	TEXT,
	acctinputoctets		INTEGER,
	acctoutputoctets	INTEGER,
	calledstationid		TEXT,
	callingstationid	TEXT,
	acctterminatecause	TEXT,
	servicetype		TEXT,
	framedprotocol		TEXT,
	framedipaddress		TEXT,
	framedipv6address	TEXT,
	framedipv6prefix	TEXT,
	framedinterfaceid	TEXT,
	delegatedipv6prefix	TEXT,
	class			TEXT
);
CREATE INDEX IF NOT EXISTS radacct_archive_start_idx ON radacct_archive (acctstarttime);

CREATE TABLE IF NOT EXISTS nas (
	id			INTEGER PRIMARY KEY AUTOINCREMENT,
	nasname			TEXT NOT NULL,
	shortname		TEXT NOT NULL,
	type			TEXT NOT NULL DEFAULT 'other',
	ports			INTEGER,
	secret			TEXT NOT NULL,
	server			TEXT,
	community		TEXT,
	description		TEXT,
	coa_port		INTEGER NOT NULL DEFAULT 1700,
	api_port		INTEGER,
	api_username		TEXT,
	api_password		TEXT
);

CREATE TABLE IF NOT EXISTS resellers (
	id			INTEGER PRIMARY KEY AUTOINCREMENT,
	parent_id		INTEGER REFERENCES resellers (id),
	name			TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subscribers (
	id			INTEGER PRIMARY KEY AUTOINCREMENT,
	username		TEXT NOT NULL UNIQUE,
	reseller_id		INTEGER REFERENCES resellers (id),
	is_online		INTEGER NOT NULL DEFAULT 0
);
