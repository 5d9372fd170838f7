#!/usr/bin/env bash
# One radacctd node against two on the same PostgreSQL, the same total load (docs/HA.md).
#
#   benches/two-nodes.sh [--sessions N] [--window W] [--rounds R] [--no-notify] [--no-build]
#                        [--out DIR]
#
# Per round, alternating: "one" runs one release daemon on a fresh database and drives it with
# radacctd-bench (N sessions × Start, Interim-Update, Stop, W requests in flight); "two" runs two
# daemons (node names a and b) on another fresh database and drives both with the same
# invocation plus `--target <b> --spread alternate`, so that every session's packets alternate
# between the nodes (Start on one, Interim-Update on the other, Stop on the first) and each node
# must apply the other's commits to its index. --verify-db checks every final row in both.
#
# Printed per run: packets/s; CPU per packet of the daemons together, of this database's
# PostgreSQL backends (with the WAL writer, checkpointer and background writer), and of the
# machine; and, for "two", the coherence lag (from another node's statement to its application
# to this node's index, radacctd_index_coherence_lag_seconds of both nodes, p50 and p99
# interpolated within the histogram's buckets) and the index entries changed by the other
# node's commits (radacctd_index_remote_changes_total).
#
# --no-notify disables the change-notification triggers once the daemons have migrated: the
# nodes then do not follow each other (their indexes drift), which separates what coherence
# costs from what splitting the same load over two writers costs.
#
# PostgreSQL as in run-load.sh: RADACCTD_BENCH_DATABASE_URL, else RADACCTD_TEST_DATABASE_URL,
# else postgres://postgres@127.0.0.1:5432/postgres; the databases are dropped on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

sessions=25000
window=256
rounds=2
notify=1
build=1
out=
while [ $# -gt 0 ]; do
    case "$1" in
        --sessions) sessions=$2; shift 2 ;;
        --window) window=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --no-notify) notify=0; shift ;;
        --out) out=$2; shift 2 ;;
        -h|--help) usage "$0"; exit 0 ;;
        *) echo "two-nodes.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

release_bins two-nodes.sh "$build" radacctd radacctd-bench
daemon_bin=$target_dir/release/radacctd
bench_bin=$target_dir/release/radacctd-bench
[ -n "$out" ] || out=$target_dir/benchruns/$(date -u +%Y%m%dT%H%M%SZ)-two-nodes
mkdir -p "$out"
tmp=$(mktemp -d /tmp/radacctd-two-nodes.XXXXXX)
admin=$(pg_admin_url)
pids=()
dbs=()
cleanup() {
    set +e
    for p in "${pids[@]}"; do stop_pid "$p" 300; done
    for d in "${dbs[@]}"; do psql "$admin" -qXc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_node NAME URL DIR: starts a daemon; prints "PID RADIUS-ADDRESS METRICS-ADDRESS".
start_node() {
    local name=$1 url=$2 dir=$3 metrics pid rc=0 addr
    metrics=127.0.0.1:$(free_port tcp)
    mkdir -p "$dir"
    env RADACCTD__DATABASE__URL="$url" RADACCTD__NODE__NAME="$name" \
        RADACCTD__RADIUS__LISTEN=127.0.0.1:0 RADACCTD__API__LISTEN=127.0.0.1:0 \
        RADACCTD__METRICS__LISTEN="$metrics" RADACCTD__JOURNAL__PATH="$dir/radacctd.journal" \
        RADACCTD__LOG__FORMAT=json \
        "$daemon_bin" serve >"$dir/daemon.log" 2>&1 &
    pid=$!
    addr=$(listener_address "$dir/daemon.log" "$pid" 3000) || rc=$?
    [ "$rc" = 0 ] || { cat "$dir/daemon.log" >&2; echo "two-nodes.sh: node $name did not start" >&2; exit 1; }
    echo "$pid $addr $metrics"
}

# lag METRICS...: p50 and p99 (ms) of the coherence-lag histograms of these /metrics, summed.
lag() {
    for m in "$@"; do curl -s "http://$m/metrics"; done | python3 -c '
import sys, collections
buckets = collections.Counter()
for line in sys.stdin:
    if line.startswith("radacctd_index_coherence_lag_seconds_bucket"):
        le = line.split("le=\"")[1].split("\"")[0]
        buckets[float("inf") if le == "+Inf" else float(le)] += float(line.split()[-1])
bounds = sorted(buckets)
total = buckets[float("inf")] if bounds else 0
def q(p):
    want, lo, below = p * total, 0.0, 0.0
    for b in bounds:
        if buckets[b] >= want:
            if b == float("inf"):
                return lo * 1000
            inside = buckets[b] - below
            frac = (want - below) / inside if inside else 1.0
            return (lo + (b - lo) * frac) * 1000
        lo, below = b, buckets[b]
    return float("nan")
print("%d %.1f %.1f" % (total, q(0.5), q(0.99)) if total else "0 - -")
'
}
remote_changes() {
    for m in "$@"; do curl -s "http://$m/metrics"; done |
        awk '$1 == "radacctd_index_remote_changes_total" {s += $2} END {print s + 0}'
}

hz=$(getconf CLK_TCK)
echo "two-nodes: $sessions sessions × (Start, Interim-Update, Stop), window $window, $rounds round(s), notifications $([ "$notify" = 1 ] && echo on || echo off); load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-5s %10s %12s %14s %12s %22s %14s\n' nodes packets/s "daemons/pkt" "postgres/pkt" "machine/pkt" "lag p50 / p99 (n)" remote-changes
for round in $(seq 1 "$rounds"); do
    for mode in one two; do
        db=radacctd_two_${$}_${round}_$mode
        psql "$admin" -qXc "CREATE DATABASE $db" >/dev/null
        dbs+=("$db")
        url=$(url_with_db "$admin" "$db")
        run=$tmp/$round-$mode
        read -r pa ra ma <<<"$(start_node a "$url" "$run/a")"
        pids+=("$pa")
        targets=(--target "$ra")
        nodes=("$pa")
        metrics=("$ma")
        if [ "$mode" = two ]; then
            read -r pb rb mb <<<"$(start_node b "$url" "$run/b")"
            pids+=("$pb")
            targets+=(--target "$rb" --spread alternate)
            nodes+=("$pb")
            metrics+=("$mb")
        fi
        if [ "$notify" = 0 ]; then
            psql "$url" -qXc "ALTER TABLE radacct DISABLE TRIGGER USER" >/dev/null
        fi
        declare -A pg0=()
        for p in $(pg_pids "$admin" "$db"); do pg0[$p]=$(ticks "$p"); done
        d0=0; for p in "${nodes[@]}"; do d0=$((d0 + $(ticks "$p"))); done
        b0=$(busy)
        "$bench_bin" "${targets[@]}" --sessions "$sessions" --window "$window" \
            --verify-db "$url" --json "$run/summary.json" >"$run/bench.out" 2>"$run/bench.err" ||
            { cat "$run/bench.err" >&2; echo "two-nodes.sh: radacctd-bench failed ($mode)" >&2; exit 1; }
        b1=$(busy)
        d1=0; for p in "${nodes[@]}"; do d1=$((d1 + $(ticks "$p"))); done
        pg=0
        declare -A seen=()
        for p in $(pg_pids "$admin" "$db") "${!pg0[@]}"; do
            [ -n "${seen[$p]:-}" ] && continue
            seen[$p]=1
            now=$(ticks "$p"); before=${pg0[$p]:-0}
            [ "$now" -ge "$before" ] && pg=$((pg + now - before))
        done
        unset seen pg0
        read -r answered rate <<<"$(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
ph = [p for p in s["phases"] if p["phase"] != "total"]
n = sum(p["answered"] for p in ph); t = sum(p["elapsed_seconds"] for p in ph)
print(n, round(n / t))' "$run/summary.json")"
        if [ "$mode" = two ]; then
            sleep 1.5 # the last notifications reach the other node
            read -r nlag p50 p99 <<<"$(lag "${metrics[@]}")"
            lagtxt="$p50 / $p99 ms ($nlag)"
            changes=$(remote_changes "${metrics[@]}")
        else
            lagtxt="-"; changes="-"
        fi
        awk -v n="$answered" -v r="$rate" -v d=$((d1 - d0)) -v p=$pg -v m=$((b1 - b0)) -v hz="$hz" \
            -v mode="$mode" -v lag="$lagtxt" -v ch="$changes" 'BEGIN {
            printf "%-5s %10d %9.1f µs %11.1f µs %9.1f µs %22s %14s\n", mode, r,
                d / hz / n * 1e6, p / hz / n * 1e6, m / hz / n * 1e6, lag, ch
        }' | tee -a "$out/two-nodes.out"
        grep -h 'verify' "$run/bench.err" "$run/bench.out" 2>/dev/null | tail -1 >>"$out/two-nodes.out" || true
        for p in "${nodes[@]}"; do stop_pid "$p" 300; done
        pids=()
        psql "$admin" -qXc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
    done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg); output in $out"
