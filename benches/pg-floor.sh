#!/usr/bin/env bash
# PostgreSQL's own floor for the load workload: what the database alone spends per row when the
# 25,000 Starts, Interim-Updates and Stops of `radacctd-bench` are written by SQL generated
# inside the server, with no client, no protocol, no parsing of packets and no planning per row.
#
#   benches/pg-floor.sh [--sessions N] [--batch B] [--notify trigger|none|statement] [--no-build]
#
# A fresh database gets radacctd's schema and all its indexes (the release daemon is started
# on it until EnsureIndexes has run, then stopped). Then, for each phase, one procedure call
# writes N rows in statements of B rows (default 32, the batch size the writer forms at window
# 64), committing after each statement with synchronous_commit = on, as the writer does:
#   start   INSERT … SELECT FROM generate_series  (the columns a MikroTik Start fills)
#   interim UPDATE … acctupdatetime, counters, session time, interval (every 10th past 4 GiB)
#   stop    UPDATE … acctstoptime, counters, session time, terminate cause
# and prints, per phase, wall time, the backend's CPU time (utime + stime from /proc) and CPU
# per row. Run it with --batch 25000 for one statement per phase (no per-batch cost at all).
#
# --notify compares the ways a node can tell the others what it changed (docs/HA.md):
#   trigger    migration 0003's statement-level triggers NOTIFY the changed ids (the default:
#              what the daemon installs)
#   none       the triggers disabled: no notification at all
#   statement  the triggers disabled; each statement is followed, in its transaction, by one
#              pg_notify of its ids (what a writer that NOTIFYs itself would send)
# A psql session LISTENs on the channel throughout, so the notifications are queued and read.
#
# PostgreSQL as in run-load.sh: RADACCTD_BENCH_DATABASE_URL, else RADACCTD_TEST_DATABASE_URL,
# else postgres://postgres@127.0.0.1:5432/postgres; the database is dropped on exit. The backend's
# /proc entry must be readable, so PostgreSQL must run on this machine.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

sessions=25000
batch=32
notify=trigger
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --sessions) sessions=$2; shift 2 ;;
        --batch) batch=$2; shift 2 ;;
        --notify) notify=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) usage "$0"; exit 0 ;;
        *) echo "pg-floor.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

case "$notify" in trigger|none|statement) ;; *) echo "pg-floor.sh: --notify trigger, none or statement" >&2; exit 2 ;; esac
release_bins pg-floor.sh "$build" radacctd
daemon_bin=$target_dir/release/radacctd

admin=$(pg_admin_url)
db=radacctd_floor_$$
tmp=$(mktemp -d /tmp/radacctd-pg-floor.XXXXXX)
dpid=
cleanup() {
    set +e
    [ -n "$dpid" ] && kill -KILL "$dpid" 2>/dev/null
    [ -n "${lpid:-}" ] && kill "$lpid" 2>/dev/null
    psql "$admin" -qXc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

url=$(url_with_db "$admin" "$db")
psql "$admin" -qXc "CREATE DATABASE $db" >/dev/null

# The daemon migrates and creates its indexes; stop it once EnsureIndexes has reported.
env RADACCTD__DATABASE__URL="$url" RADACCTD__RADIUS__LISTEN=127.0.0.1:0 \
    RADACCTD__API__LISTEN=127.0.0.1:0 RADACCTD__METRICS__LISTEN=127.0.0.1:0 \
    RADACCTD__JOURNAL__PATH="$tmp/journal" RADACCTD__LOG__FORMAT=json \
    "$daemon_bin" serve >"$tmp/daemon.log" 2>&1 &
dpid=$!
for _ in $(seq 1 600); do
    grep -q 'EnsureIndexes' "$tmp/daemon.log" && break
    kill -0 "$dpid" 2>/dev/null || { cat "$tmp/daemon.log" >&2; exit 1; }
    sleep 0.1
done
grep -q 'EnsureIndexes created' "$tmp/daemon.log" || { cat "$tmp/daemon.log" >&2; echo "pg-floor.sh: no indexes" >&2; exit 1; }
kill -TERM "$dpid"; wait "$dpid" 2>/dev/null || true; dpid=

psql "$url" -qX <<'SQL'
-- One phase: rows 0..n-1 in statements of b rows, each committed; with `notify_after`, each
-- statement is followed by pg_notify calls carrying its ids, 300 per notification.
CREATE PROCEDURE floor_phase(phase text, n int, b int, notify_after boolean) LANGUAGE plpgsql AS $$
DECLARE lo int := 0; t0 bigint := 1700000000; ids text;
BEGIN
    WHILE lo < n LOOP
        IF phase = 'start' THEN
            INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, nasportid,
                nasporttype, acctstarttime, acctupdatetime, acctauthentic, acctinputoctets,
                acctoutputoctets, calledstationid, callingstationid, servicetype, framedprotocol,
                framedipaddress, acctinterval, acctsessiontime)
            SELECT lpad(to_hex(g), 8, '0'), md5('floor' || g), 'user' || g,
                ('10.0.0.' || (1 + g % 4))::inet, '<pppoe-user' || g || '>', 'Ethernet',
                to_timestamp(t0 + g), to_timestamp(t0 + g), 'RADIUS', 0, 0, 'service1',
                '02:00:' || lpad(to_hex(g), 8, '0'), 'Framed-User', 'PPP',
                ('100.64.0.0'::inet + g), 0, 0
            FROM generate_series(lo, least(lo + b, n) - 1) g;
        ELSIF phase = 'interim' THEN
            UPDATE radacct SET acctupdatetime = to_timestamp(t0 + 300 + g),
                acctinterval = 300, acctsessiontime = 300,
                acctinputoctets = CASE WHEN g % 10 = 0 THEN 5000000000 + g ELSE 1000000 + g END,
                acctoutputoctets = CASE WHEN g % 10 = 0 THEN 9000000000 + g ELSE 2000000 + g END
            FROM generate_series(lo, least(lo + b, n) - 1) g
            WHERE acctuniqueid = md5('floor' || g) AND acctstoptime IS NULL;
        ELSE
            UPDATE radacct SET acctstoptime = to_timestamp(t0 + 600 + g),
                acctupdatetime = to_timestamp(t0 + 600 + g), acctsessiontime = 600,
                acctinputoctets = 2000000 + g, acctoutputoctets = 4000000 + g,
                acctterminatecause = 'User-Request'
            FROM generate_series(lo, least(lo + b, n) - 1) g
            WHERE acctuniqueid = md5('floor' || g) AND acctstoptime IS NULL;
        END IF;
        IF notify_after THEN
            FOR ids IN
                SELECT string_agg((g + 1)::text, ',')
                FROM generate_series(lo, least(lo + b, n) - 1) g GROUP BY (g - lo) / 300
            LOOP
                PERFORM pg_notify('radacctd_changes', 'origin|' || (extract(epoch FROM clock_timestamp()) * 1000000)::bigint || '|' || ids);
            END LOOP;
        END IF;
        COMMIT;
        lo := lo + b;
    END LOOP;
END $$;
SQL

[ "$notify" = trigger ] || psql "$url" -qXc "ALTER TABLE radacct DISABLE TRIGGER USER"
notify_after=false
[ "$notify" = statement ] && notify_after=true
# A listener that reads what is notified (psql prints notifications after each command).
( echo "LISTEN radacctd_changes;"; while sleep 0.2; do echo "SELECT 1;"; done ) | psql -qX "$url" >/dev/null 2>&1 &
lpid=$!

indexes=$(psql "$url" -qXtAc "SELECT count(*) FROM pg_indexes WHERE tablename = 'radacct'")
triggers=$(psql "$url" -qXtAc "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'radacct'::regclass AND NOT tgisinternal AND tgenabled <> 'D'")
echo "pg-floor: $sessions rows per phase in statements of $batch, each committed; radacct has $indexes indexes, $triggers enabled triggers; notifications: $notify"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
ticks=$(getconf CLK_TCK)
total_cpu=0
# A backend of its own: psql reads its pid, then runs the three phases, reporting /proc deltas.
coproc PSQL { psql "$url" -qXtA 2>&1; }
ask() { echo "$1" >&"${PSQL[1]}"; read -r reply <&"${PSQL[0]}"; echo "$reply"; }
pid=$(ask "SELECT pg_backend_pid();")
cpu() { ticks "$pid"; }
ask "SET synchronous_commit = on; SELECT 'ok';" >/dev/null
for phase in start interim stop; do
    # The updates look rows up by acctuniqueid: statistics first, as autovacuum would have.
    [ "$phase" = interim ] && ask "ANALYZE radacct; SELECT 'ok';" >/dev/null
    c0=$(cpu); w0=$(date +%s.%N)
    reply=$(ask "CALL floor_phase('$phase', $sessions, $batch, $notify_after); SELECT count(*) FROM radacct;")
    w1=$(date +%s.%N); c1=$(cpu)
    awk -v p="$phase" -v n="$sessions" -v w="$(echo "$w1 - $w0" | bc)" -v c="$(( c1 - c0 ))" -v t="$ticks" -v r="$reply" 'BEGIN {
        printf "%-8s wall %.3f s (%.0f rows/s); backend CPU %.2f s = %.1f µs per row (table: %s rows)\n",
            p, w, n / w, c / t, c / t / n * 1e6, r
    }'
    total_cpu=$(( total_cpu + c1 - c0 ))
done
awk -v c="$total_cpu" -v t="$ticks" -v n="$sessions" 'BEGIN {
    printf "all phases: backend CPU %.1f µs per row\n", c / t / (3 * n) * 1e6
}'
# Statistics reach pg_stat_user_tables when a backend ends (or once a second at most).
exec {PSQL[1]}>&-
wait "$PSQL_PID" 2>/dev/null || true
sleep 1
pg_stat=$(psql "$url" -qXtAc "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'radacct'")
echo "updates, of them HOT: ${pg_stat/|/, }"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
