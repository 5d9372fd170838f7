-- The runs of the housekeeping jobs (docs/ARCHITECTURE.md#jobs): each sweeper and archiver run
-- inserts a row when it starts and completes it when it ends. finished_at stays NULL while a
-- run is in progress (or when the daemon stopped during it); error is NULL for a run that
-- succeeded. rows: sessions closed (sweeper) or moved to radacct_archive (archiver). The
-- archiver deletes rows older than 30 days.
CREATE TABLE IF NOT EXISTS job_runs (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	job TEXT NOT NULL,
	node TEXT NOT NULL,
	started_at TEXT NOT NULL,
	finished_at TEXT,
	rows INTEGER NOT NULL DEFAULT 0,
	error TEXT
);
CREATE INDEX IF NOT EXISTS job_runs_started_at_idx ON job_runs (started_at);
