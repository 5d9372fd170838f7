#!/usr/bin/env bash
# Reproducible load run: a fresh database, the release daemon, radacctd-bench against it, and
# where the CPU went (daemon / PostgreSQL / load generator / everything else on the machine).
#
#   benches/run-load.sh [--store pg|sqlite] [--freeradius-schema] [--fillfactor F] [--sql FILE]
#                       [--out DIR] [--keep] [--no-build] [-- BENCH-ARGS...]
#   benches/run-load.sh --memory N [--store pg|sqlite] [--out DIR] [--keep] [--no-build]
#
# BENCH-ARGS go to radacctd-bench unchanged (default: --sessions 25000 --window 64); --target,
# --verify-db and --json are added here. Examples:
#
#   benches/run-load.sh -- --sessions 25000 --window 256
#   benches/run-load.sh --store sqlite -- --window 1024
#   benches/run-load.sh -- --sessions 25000 --window 64 --steady 30 --churn 0.5
#
# --memory N: the daemon's RSS (VmRSS) with 0 open sessions, after 25,000 Starts and after N
# Starts in total (each read once the reply cache's 30 s window has passed, so only the index
# remains), then a restart: the `index rebuilt` log line (open sessions, elapsed_ms) and the RSS
# of the restarted daemon, whose only per-session memory is the index. Prints bytes per open
# session. The sweeper is disabled for this mode (so no session goes stale while it runs).
#
# PostgreSQL: a new database radacctd_bench_<pid> is created from the admin URL in
# RADACCTD_BENCH_DATABASE_URL, else RADACCTD_TEST_DATABASE_URL, else
# postgres://postgres@127.0.0.1:5432/postgres, and dropped on exit (unless --keep). SQLite: a
# file in a temporary directory. The daemon runs with its defaults (no config file: quick-start
# client 127.0.0.1 / testing123), listeners on free loopback ports, the journal in the temporary
# directory; any RADACCTD__SECTION__KEY in the environment is passed through (for example
# RADACCTD__RADIUS__MAX_BATCH=256). --fillfactor F (PostgreSQL): `radacctd migrate` first, then
# ALTER TABLE radacct SET (fillfactor = F) before the daemon starts. --freeradius-schema
# (PostgreSQL): the database starts with the tables of FreeRADIUS's own schema.sql (package
# freeradius), as on a RADIUS host where FreeRADIUS was set up first; radacctd migrates around
# them. --sql FILE (PostgreSQL):
# likewise, `radacctd migrate` first, then FILE run with psql (for example, with
# RADACCTD__JOBS__ENSURE_INDEXES=false, to build only some of the indexes and see what each costs).
#
# Output: the bench table, the verification line, then
#   cpu: wall W s; radacctd D s (x% of a core), postgres P s (this database's backends + WAL
#   writer, checkpointer, background writer; all postgres processes: A s), bench B s, rest R s
#   writer: batches, mean events per batch, mean commit time (from the daemon's /metrics), and
#           sessions by where the writer took their rows from (index, new, read, redone)
#   ingest thread: how long it ran tasks during the run (radacctd_ingest_thread_busy_seconds:
#           wall-clock time while busy, so time spent waiting for a CPU counts too)
#   radacct: updates, and how many were HOT (PostgreSQL; read once the daemon has stopped)
# and the load average before and after. Everything is also written to DIR (default
# target/benchruns/<timestamp>-<store>): daemon.log, bench.out, summary.json.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

store=pg
out=
keep=0
build=1
memory=
fillfactor=
sql_file=
fr_schema=
while [ $# -gt 0 ]; do
    case "$1" in
        --store) store=$2; shift 2 ;;
        --store=*) store=${1#--store=}; shift ;;
        --out) out=$2; shift 2 ;;
        --out=*) out=${1#--out=}; shift ;;
        --memory) memory=$2; shift 2 ;;
        --fillfactor) fillfactor=$2; shift 2 ;;
        --sql) sql_file=$2; shift 2 ;;
        --freeradius-schema) fr_schema=$FR_PG_SCHEMA; shift ;;
        --memory=*) memory=${1#--memory=}; shift ;;
        --keep) keep=1; shift ;;
        --no-build) build=0; shift ;;
        --) shift; break ;;
        -h|--help) usage "$0"; exit 0 ;;
        *) echo "run-load.sh: unknown option $1 (bench arguments go after --)" >&2; exit 2 ;;
    esac
done
case "$store" in pg|postgres) store=pg ;; sqlite) ;; *) echo "run-load.sh: --store pg|sqlite" >&2; exit 2 ;; esac
bench_args=("$@")
[ ${#bench_args[@]} -eq 0 ] && bench_args=(--sessions 25000 --window 64)

release_bins run-load.sh "$build" radacctd radacctd-bench
daemon_bin=$target_dir/release/radacctd
bench_bin=$target_dir/release/radacctd-bench

[ -n "$out" ] || out=$target_dir/benchruns/$(date -u +%Y%m%dT%H%M%SZ)-$store${memory:+-memory}
mkdir -p "$out"
tmp=$(mktemp -d /tmp/radacctd-run-load.XXXXXX)
admin=$(pg_admin_url)
db=radacctd_bench_$$
dpid=

stop_daemon() {
    stop_pid "$dpid" 300
    dpid=
}
cleanup() {
    set +e
    stop_daemon
    if [ "$store" = pg ] && [ "$keep" = 0 ]; then
        psql "$admin" -qXc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
    fi
    if [ "$keep" = 0 ]; then rm -rf "$tmp"; else echo "kept: $tmp${store/sqlite/}${store/pg/ database $db}" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$store" = pg ]; then
    psql "$admin" -qXc "CREATE DATABASE $db" >/dev/null
    url=$(url_with_db "$admin" "$db")
else
    url=sqlite://$tmp/bench.db
fi
if [ -n "$fr_schema" ]; then
    [ "$store" = pg ] || { echo "run-load.sh: --freeradius-schema is for PostgreSQL" >&2; exit 2; }
    [ -r "$fr_schema" ] || { echo "run-load.sh: $fr_schema not found (apt-get install freeradius)" >&2; exit 2; }
    psql "$url" -qX -v ON_ERROR_STOP=1 -f "$fr_schema" >/dev/null
fi
if [ -n "$fillfactor$sql_file" ]; then
    [ "$store" = pg ] || { echo "run-load.sh: --fillfactor and --sql are for PostgreSQL" >&2; exit 2; }
    RADACCTD__DATABASE__URL=$url RADACCTD__LOG__FORMAT=json "$daemon_bin" migrate >"$out/migrate.log" 2>&1
    [ -z "$fillfactor" ] || psql "$url" -qXc "ALTER TABLE radacct SET (fillfactor = $fillfactor)" >/dev/null
    [ -z "$sql_file" ] || psql "$url" -qX -v ON_ERROR_STOP=1 -f "$sql_file" >/dev/null
fi
metrics=127.0.0.1:$(free_port tcp)
extra_env=()
[ -n "$memory" ] && extra_env+=(RADACCTD__JOBS__SWEEP_ENABLED=false)

# start_daemon LOGFILE: starts the daemon, waits for the listener; sets dpid and addr.
start_daemon() {
    env RADACCTD__DATABASE__URL="$url" \
        RADACCTD__RADIUS__LISTEN=127.0.0.1:0 \
        RADACCTD__API__LISTEN=127.0.0.1:0 \
        RADACCTD__METRICS__LISTEN="$metrics" \
        RADACCTD__JOURNAL__PATH="$tmp/radacctd.journal" \
        RADACCTD__LOG__FORMAT=json \
        "${extra_env[@]}" \
        "$daemon_bin" serve >"$1" 2>&1 &
    dpid=$!
    local rc=0
    addr=$(listener_address "$1" "$dpid" 3000) || rc=$?
    case "$rc" in
        0) ;;
        1) cat "$1" >&2; echo "run-load.sh: daemon exited" >&2; exit 1 ;;
        *) echo "run-load.sh: daemon did not bind within 300 s" >&2; exit 1 ;;
    esac
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$dpid/status"; }
# sum and count of a histogram on /metrics
metric() { curl -s "http://$metrics/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

if [ -n "$memory" ]; then
    start_daemon "$out/daemon.log"
    sleep 3
    rss0=$(rss_kib)
    echo "memory: daemon RSS with 0 open sessions: $rss0 KiB (load average $(cut -d' ' -f1-3 /proc/loadavg))" | tee "$out/memory.out"
    first=$(( memory < 25000 ? memory : 25000 ))
    rest=$(( memory - first ))
    run_stage() { # sessions prefix sid-base
        echo "+ radacctd-bench --sessions $1 --phases start --window 1024 --user-prefix $2 --sid-base $3 --verify-db <db>" | tee -a "$out/memory.out"
        "$bench_bin" --target "$addr" --sessions "$1" --phases start --window 1024 \
            --user-prefix "$2" --sid-base "$3" --verify-db "$url" 2>"$out/bench-$2.err" | tee -a "$out/memory.out"
        echo "  waiting 40 s for the reply cache (30 s window, purged every 5 s) to empty…" >&2
        sleep 40
    }
    run_stage "$first" a 10000000
    rss1=$(rss_kib)
    echo "memory: RSS with $first open sessions: $rss1 KiB" | tee -a "$out/memory.out"
    total=$first
    rssn=$rss1
    if [ "$rest" -gt 0 ]; then
        run_stage "$rest" b 20000000
        total=$memory
        rssn=$(rss_kib)
        echo "memory: RSS with $total open sessions: $rssn KiB" | tee -a "$out/memory.out"
    fi
    stop_daemon
    start_daemon "$out/daemon-restart.log"
    sleep 3
    rssr=$(rss_kib)
    rebuilt=$(grep -m1 '"index rebuilt"\|index rebuilt' "$out/daemon-restart.log")
    n=$(printf '%s' "$rebuilt" | grep -o '"open_sessions":[0-9]*' | cut -d: -f2)
    ms=$(printf '%s' "$rebuilt" | grep -o '"elapsed_ms":[0-9]*' | cut -d: -f2)
    gauge=$(metric radacctd_index_rebuild_duration_seconds)
    {
        echo "memory: restart: index rebuilt with $n open sessions in $ms ms (radacctd_index_rebuild_duration_seconds $gauge); RSS after the restart: $rssr KiB"
        awk -v r0="$rss0" -v r1="$rss1" -v rn="$rssn" -v rr="$rssr" -v f="$first" -v t="$total" 'BEGIN {
            printf "memory: bytes per open session: %.0f (0 → %d, live), %.0f (0 → %d, live), %.0f (0 → %d, after restart)\n",
                (r1 - r0) * 1024 / f, f, (rn - r0) * 1024 / t, t, (rr - r0) * 1024 / t, t
        }'
        echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    } | tee -a "$out/memory.out"
    exit 0
fi

start_daemon "$out/daemon.log"

all_pg() { for p in $(pgrep -u postgres); do ticks "$p"; done | awk '{s+=$1} END{print s+0}'; }
# This database's backends plus the cluster's shared writers (WAL writer, checkpointer, bgwriter).
our_pg_pids() {
    if [ "$store" = pg ]; then
        pg_pids "$admin" "$db"
    fi
}
declare -A pg0=()
for p in $(our_pg_pids); do pg0[$p]=$(ticks "$p"); done
load0=$(cut -d' ' -f1-3 /proc/loadavg)
bs0=$(metric radacctd_write_batch_size_sum); bc0=$(metric radacctd_write_batch_size_count)
pb0=$(metric radacctd_write_batches_paired_total)
cs0=$(metric radacctd_commit_duration_seconds_sum)
ib0=$(metric radacctd_ingest_thread_busy_seconds)
b0=$(busy); d0=$(ticks "$dpid"); a0=$(all_pg); t0=$(date +%s.%N)

cmd=("$bench_bin" --target "$addr" "${bench_args[@]}" --verify-db "$url" --json "$out/summary.json")
echo "+ radacctd-bench ${bench_args[*]} --verify-db <fresh $store database>" | tee "$out/bench.out"
set +e
/usr/bin/time -f '%U %S' -o "$tmp/time" "${cmd[@]}" 2>"$out/bench.err" | tee -a "$out/bench.out"
rc=${PIPESTATUS[0]}
set -e
t1=$(date +%s.%N); b1=$(busy); d1=$(ticks "$dpid"); a1=$(all_pg)
load1=$(cut -d' ' -f1-3 /proc/loadavg)
bs1=$(metric radacctd_write_batch_size_sum); bc1=$(metric radacctd_write_batch_size_count)
pb1=$(metric radacctd_write_batches_paired_total)
ib1=$(metric radacctd_ingest_thread_busy_seconds)
ingest=""
if [ -n "$ib1" ]; then
    ingest=$(awk -v i0="${ib0:-0}" -v i1="$ib1" -v t0="$t0" -v t1="$t1" 'BEGIN {
        printf "ingest thread: busy %.2f s (%.0f%% of the wall time)", i1 - i0, 100 * (i1 - i0) / (t1 - t0) }')
fi
sources=""
for src in index new read redone; do
    sources="$sources $src $(metric "radacctd_write_sessions_total{source=\"$src\"}")"
done
cs1=$(metric radacctd_commit_duration_seconds_sum)
pg_ours=0
declare -A seen=()
for p in $(our_pg_pids) "${!pg0[@]}"; do
    [ -n "${seen[$p]:-}" ] && continue
    seen[$p]=1
    now=$(ticks "$p"); before=${pg0[$p]:-0}
    if [ "$now" -ge "$before" ]; then pg_ours=$((pg_ours + now - before)); fi
done
bench_cpu=$(awk '{print $1+$2}' "$tmp/time" 2>/dev/null || echo 0)
hz=$(getconf CLK_TCK)
summary=$(awk -v t0="$t0" -v t1="$t1" -v d=$((d1 - d0)) -v p=$pg_ours -v a=$((a1 - a0)) \
    -v b="$bench_cpu" -v m=$((b1 - b0)) -v hz="$hz" -v st="$store" 'BEGIN {
    w = t1 - t0; d /= hz; p /= hz; a /= hz; m /= hz;
    rest = m - d - a - b; if (rest < 0) rest = 0;
    printf "cpu: wall %.2f s; radacctd %.2f s (%.0f%% of a core)", w, d, 100*d/w;
    if (st == "pg") printf ", postgres %.2f s (%.0f%%; all postgres processes %.2f s, %.0f%%)", p, 100*p/w, a, 100*a/w;
    printf ", bench %.2f s (%.0f%%), everything else on the machine %.2f s (%.0f%%)\n", b, 100*b/w, rest, 100*rest/w;
}')
writer=$(awk -v s0="${bs0:-0}" -v s1="${bs1:-0}" -v c0="${bc0:-0}" -v c1="${bc1:-0}" \
    -v d0="${cs0:-0}" -v d1="${cs1:-0}" -v t0="$t0" -v t1="$t1" \
    -v p0="${pb0:-0}" -v p1="${pb1:-0}" 'BEGIN {
    n = c1 - c0; if (n <= 0) { print "writer: no batches recorded on /metrics"; exit }
    printf "writer: %d batches (%d of them committed in pairs), %.1f events per batch, %.2f ms per batch in the store (%.0f%% of the wall time)\n",
        n, p1 - p0, (s1 - s0) / n, 1000 * (d1 - d0) / n, 100 * (d1 - d0) / (t1 - t0)
}')
hot=
if [ "$store" = pg ]; then
    # The daemon's backends report their table statistics when they end.
    stop_daemon
    sleep 1
    hot=$(psql "$url" -qXAt -F ' ' -c "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables \
        WHERE relname = 'radacct'" | awk '{printf "radacct: %d updates, %d of them HOT (no index entries)", $1, $2}')
fi
{
    echo "$summary"
    echo "$writer"
    [ -z "$ingest" ] || echo "$ingest"
    [ -z "$hot" ] || echo "$hot"
    echo "writer: sessions by where their row came from (radacctd_write_sessions_total since start):$sources"
    echo "load average before: $load0; after: $load1 ($(nproc) CPUs)"
    [ "$rc" = 0 ] || echo "radacctd-bench exit code $rc"
} | tee -a "$out/bench.out"
[ "$rc" = 0 ] || tail -5 "$out/bench.err" >&2
echo "(logs and summary.json in $out)"
exit "$rc"
