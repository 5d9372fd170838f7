-- The same as migrations/postgres/0010: session events in batches (docs/EVENTS.md#storage).
CREATE TABLE IF NOT EXISTS event_batches (
	seq		INTEGER PRIMARY KEY AUTOINCREMENT,
	count		INTEGER NOT NULL CHECK (count > 0),
	first_id	INTEGER,
	created		INTEGER,
	lines		TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS event_batches_first_id_idx ON event_batches (first_id)
	WHERE first_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS event_batches_queue_idx ON event_batches (seq) WHERE first_id IS NULL;

INSERT INTO event_batches (count, first_id, created, lines)
SELECT 1, id, created, json_array(type, time, username, nasipaddress, acctuniqueid, radacctid,
	json(data))
FROM events ORDER BY id;
INSERT INTO event_batches (count, lines)
SELECT 1, json_array(type, time, username, nasipaddress, acctuniqueid, radacctid, json(data))
FROM event_queue ORDER BY seq;
DROP TABLE event_queue;
DROP TABLE events;
