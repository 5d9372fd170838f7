-- Change notifications (docs/HA.md#index-coherence): every statement that inserts, updates or
-- deletes radacct rows sends, on commit, the ids of the rows it changed on the channel
-- `radacctd_changes`, so that every radacctd node sharing this database applies another
-- writer's changes to its live index within a second. Whoever writes (radacctd, FreeRADIUS,
-- psql) is seen. NOTIFY is delivered only if the transaction commits, and only after it.
--
-- Payload: `<origin>|<statement time, µs since 1970>|<id>,<id>,…`, at most 300 ids per
-- notification (the payload limit is 8,000 bytes). <origin> is the `radacctd.origin` setting
-- of the writing connection (each radacctd process sets its own; empty for other writers): a
-- node skips its own notifications. Deletes report only rows that were open (the archiver
-- deletes closed rows, which no index holds). One statement-level trigger per operation: the
-- transition table holds the statement's rows once, whatever their number.

CREATE OR REPLACE FUNCTION radacctd_notify_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	header text := coalesce(current_setting('radacctd.origin', true), '') || '|'
		|| (extract(epoch FROM clock_timestamp()) * 1000000)::bigint || '|';
	ids text;
BEGIN
	FOR ids IN
		SELECT string_agg(radacctid::text, ',')
		FROM (
			SELECT radacctid, (row_number() OVER ()) / 300 AS chunk
			FROM radacctd_changed
			WHERE TG_OP <> 'DELETE' OR acctstoptime IS NULL
		) AS c
		GROUP BY chunk
	LOOP
		PERFORM pg_notify('radacctd_changes', header || ids);
	END LOOP;
	RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS radacctd_changes_insert ON radacct;
CREATE TRIGGER radacctd_changes_insert AFTER INSERT ON radacct
	REFERENCING NEW TABLE AS radacctd_changed
	FOR EACH STATEMENT EXECUTE FUNCTION radacctd_notify_changes();

DROP TRIGGER IF EXISTS radacctd_changes_update ON radacct;
CREATE TRIGGER radacctd_changes_update AFTER UPDATE ON radacct
	REFERENCING NEW TABLE AS radacctd_changed
	FOR EACH STATEMENT EXECUTE FUNCTION radacctd_notify_changes();

DROP TRIGGER IF EXISTS radacctd_changes_delete ON radacct;
CREATE TRIGGER radacctd_changes_delete AFTER DELETE ON radacct
	REFERENCING OLD TABLE AS radacctd_changed
	FOR EACH STATEMENT EXECUTE FUNCTION radacctd_notify_changes();
