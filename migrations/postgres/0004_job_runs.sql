-- The runs of the housekeeping jobs (docs/ARCHITECTURE.md#jobs): each sweeper and archiver run
-- of a radacctd daemon inserts a row when it starts and completes it when it ends, so that an
-- operator sees which node ran what, when, and with which result, and a node's run never
-- overlaps another node's run of the same job (only the jobs leader runs them). finished_at
-- stays NULL while a run is in progress (or when its node died during it); error is NULL for a
-- run that succeeded. rows: sessions closed (sweeper) or moved to radacct_archive (archiver).
-- The archiver deletes rows older than 30 days.
CREATE TABLE IF NOT EXISTS job_runs (
	id bigserial PRIMARY KEY,
	job text NOT NULL,
	node text NOT NULL,
	started_at timestamptz NOT NULL DEFAULT now(),
	finished_at timestamptz,
	rows bigint NOT NULL DEFAULT 0,
	error text
);
CREATE INDEX IF NOT EXISTS job_runs_started_at_idx ON job_runs (started_at);
