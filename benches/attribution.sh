#!/usr/bin/env bash
# Attribution at ISP scale: the latency of `GET /api/attribution` ("who had this address at that
# time?") through the release daemon's API, over 10,000,000 archived sessions.
#
#   benches/attribution.sh [--archived N] [--queries Q] [--no-build]
#
# A fresh database gets radacctd's schema (`radacctd migrate`), then rows made by SQL
# (generate_series, no client round trip per row):
#   radacct_archive  N closed sessions (default 10,000,000), one every 1.5 s over the months
#                    before the live ones, 6-8 h each, of 200,000 subscribers; framed IPv4 from
#                    a CGNAT pool of 65,536 addresses (each address held by about N / 65,536
#                    sessions), a /64 framed IPv6 prefix per session and a /56 delegated prefix
#                    per subscriber (each held by N / 200,000 sessions)
#   radacct          200,000 sessions of the same kind after them, the last 6-8 h still open
# The release daemon then starts on it (maintenance_work_mem 512MB for the database), builds
# the attribution GiST indexes CONCURRENTLY (EnsureIndexes; their build time is printed) and
# serves the API. Q queries (default 1,000, one at a time, curl's time_total on a kept-alive
# connection), in equal parts: a framed IPv4 address, an address inside a delegated /56, the
# /56 itself, each at a moment inside a session picked at random from the archive, and an IPv4
# address at a moment nobody held it. Each query writes its audit row, as in production.
# Prints p50, p90, p99 and max per kind and overall, the plan of one query of each kind
# (`radacctd attribution --explain`: EXPLAIN ANALYZE of the daemon's statement), the table and
# index sizes, and the load average before and after.
#
# PostgreSQL as in run-load.sh: RADACCTD_BENCH_DATABASE_URL, else RADACCTD_TEST_DATABASE_URL,
# else postgres://postgres@127.0.0.1:5432/postgres; the database is dropped on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

archived=10000000
queries=1000
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --archived) archived=$2; shift 2 ;;
        --queries) queries=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) usage "$0"; exit 0 ;;
        *) echo "attribution.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

release_bins attribution.sh "$build" radacctd
daemon_bin=$target_dir/release/radacctd

admin=$(pg_admin_url)
db=radacctd_attribution_$$
tmp=$(mktemp -d /tmp/radacctd-attribution.XXXXXX)
dpid=
cleanup() {
    set +e
    stop_pid "$dpid" 100
    psql "$admin" -qXc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

url=$(url_with_db "$admin" "$db")
psql "$admin" -qXc "CREATE DATABASE $db" >/dev/null
psql "$admin" -qXc "ALTER DATABASE $db SET maintenance_work_mem = '512MB'" >/dev/null
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
RADACCTD__DATABASE__URL="$url" "$daemon_bin" migrate >/dev/null

# Session g (from 0): subscriber g % 200,000, start t0 + 1.5 g s, 6 h + (g % 13) × 10 min long.
# Archived sessions come first; the live ones follow, the most recent still open.
live=200000
t0=1767225600 # 2026-01-01T00:00:00Z
generate() { # TABLE FIRST LAST OPEN_AFTER
    psql "$url" -qX -v ON_ERROR_STOP=1 <<SQL
INSERT INTO $1 (radacctid, acctsessionid, acctuniqueid, username, nasipaddress, nasportid,
    nasporttype, acctstarttime, acctupdatetime, acctstoptime, acctsessiontime,
    acctinputoctets, acctoutputoctets, callingstationid, acctterminatecause, servicetype,
    framedprotocol, framedipaddress, framedipv6prefix, delegatedipv6prefix)
SELECT g + 1, lpad(to_hex(g), 8, '0'), md5('attribution' || g), 'user' || (g % 200000),
    ('10.0.0.' || (1 + g % 4))::inet, '<pppoe-' || (g % 200000) || '>', 'Ethernet',
    to_timestamp($t0 + g * 1.5), to_timestamp($t0 + g * 1.5 + 21600 + (g % 13) * 600),
    CASE WHEN g < $4 THEN to_timestamp($t0 + g * 1.5 + 21600 + (g % 13) * 600) END,
    CASE WHEN g < $4 THEN 21600 + (g % 13) * 600 END,
    g * 7919 % 1000000007, g * 104729 % 1000000007,
    '02:00:' || lpad(to_hex(g % 200000), 8, '0'),
    CASE WHEN g < $4 THEN 'User-Request' END, 'Framed-User', 'PPP',
    '100.64.0.0'::inet + (g * 7919 % 65536),
    ('2001:db9:' || to_hex(g >> 16) || ':' || to_hex(g & 65535) || '::/64')::inet,
    ('2001:db8:' || to_hex((g % 200000) >> 8) || ':' || to_hex(((g % 200000) & 255) << 8) || '::/56')::inet
FROM generate_series($2::bigint, $3::bigint) AS g;
SQL
}
started=$(date +%s)
generate radacct_archive 0 $((archived - 1)) "$archived"
open_after=$((archived + live - 16000))
generate radacct "$archived" $((archived + live - 1)) "$open_after"
psql "$url" -qXc "SELECT setval('radacct_radacctid_seq', $((archived + live)))" >/dev/null
psql "$url" -qX -c "VACUUM ANALYZE radacct_archive" -c "VACUUM ANALYZE radacct" >/dev/null
echo "rows: $archived archived, $live live ($((archived + live - open_after)) open), generated in $(( $(date +%s) - started )) s"

# The daemon: migrations done, EnsureIndexes builds what is missing; the API with a rate limit
# the benchmark does not reach; no sweeper or archiver (the generated open sessions are months
# old and would be swept during the measurement).
secret=attribution-bench-secret-0123456789abcdef
cat >"$tmp/config.toml" <<TOML
[database]
url = "$url"
[radius]
listen = "127.0.0.1:0"
[[radius.clients]]
address = "127.0.0.1"
secret = "testing123"
[api]
listen = "127.0.0.1:0"
jwt_secret = "$secret"
rate_limit_burst = 1000000
[jobs]
sweep_enabled = false
archive_enabled = false
[journal]
path = "$tmp/journal"
[metrics]
enabled = false
[log]
format = "json"
TOML
started=$(date +%s)
"$daemon_bin" serve --config "$tmp/config.toml" >"$tmp/daemon.log" 2>&1 &
dpid=$!
for _ in $(seq 1 36000); do
    grep -q 'EnsureIndexes' "$tmp/daemon.log" && break
    kill -0 "$dpid" 2>/dev/null || { cat "$tmp/daemon.log" >&2; exit 1; }
    sleep 0.1
done
grep -q 'EnsureIndexes created' "$tmp/daemon.log" ||
    { cat "$tmp/daemon.log" >&2; echo "attribution.sh: no indexes" >&2; exit 1; }
echo "EnsureIndexes (CREATE INDEX CONCURRENTLY, all missing indexes of both tables): $(( $(date +%s) - started )) s"
psql "$url" -qXc "ANALYZE radacct_archive; ANALYZE radacct" >/dev/null
api=$(grep -m1 'API listener bound' "$tmp/daemon.log" | grep -o '"address":"[^"]*"' | cut -d'"' -f4)
[ -n "$api" ] || { cat "$tmp/daemon.log" >&2; echo "attribution.sh: no API address" >&2; exit 1; }
token=$("$daemon_bin" token --config "$tmp/config.toml" --role admin \
    --perm sessions.attribution --sub bench --ttl 2h)

# The queries: Q/4 of each kind, at moments inside random archived sessions.
per=$((queries / 4))
psql "$url" -qXtA -F ' ' >"$tmp/queries" <<SQL
WITH picked AS (
    SELECT framedipaddress, delegatedipv6prefix,
        acctstarttime + (acctstoptime - acctstarttime) * random() AS at
    FROM radacct_archive TABLESAMPLE SYSTEM (1) ORDER BY random() LIMIT $((per * 3))
), numbered AS (SELECT *, row_number() OVER () AS n FROM picked)
SELECT CASE n % 3 WHEN 0 THEN 'ipv4' WHEN 1 THEN 'ipv6' ELSE 'ipv6/56' END,
    CASE n % 3 WHEN 0 THEN host(framedipaddress) WHEN 1 THEN host(delegatedipv6prefix + 4660)
        ELSE set_masklen(delegatedipv6prefix, 56)::text END,
    to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
FROM numbered
UNION ALL
SELECT 'miss', host('198.51.100.0'::inet + (g % 256)),
    to_char(to_timestamp($t0 + random() * $archived * 1.5) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
FROM generate_series(1, $per) AS g;
SQL
shuf "$tmp/queries" -o "$tmp/queries"

# One curl for all of them (one kept-alive connection); time_total per request. curl takes one
# write-out for the whole run, so each line is paired with its query's kind by order.
awk -v api="$api" '{
    ip = $2; gsub(/:/, "%3A", ip); gsub(/\//, "%2F", ip)
    printf "url = \"http://%s/api/attribution?ip=%s&at=%s\"\noutput = /dev/null\n", api, ip, $3
}' "$tmp/queries" >"$tmp/curl.conf"
curl -s -H "Authorization: Bearer $token" -w '%{http_code} %{time_total}\n' \
    --config "$tmp/curl.conf" >"$tmp/answers"
paste -d ' ' <(cut -d ' ' -f1 "$tmp/queries") "$tmp/answers" >"$tmp/times"
# Warm-up is not separated: the first queries of each kind read pages from disk.
bad=$(awk '$2 != 200' "$tmp/times" | wc -l)
[ "$bad" = 0 ] || { echo "attribution.sh: $bad queries not answered 200" >&2; head -3 "$tmp/times" >&2; exit 1; }
audited=$(psql "$url" -qXtAc "SELECT count(*) FROM attribution_audit")
found=$(psql "$url" -qXtAc "SELECT count(*) FILTER (WHERE results > 0), avg(results)::numeric(6,2) FROM attribution_audit")
echo "queries: $(wc -l <"$tmp/times") answered 200 (audit rows: $audited; with a session, and sessions per answer: $found)"
pct() { # KIND (all: every query): n, p50, p90, p99, max in ms
    awk -v k="$1" 'k == "all" || $1 == k { print $3 * 1000 }' "$tmp/times" | sort -n |
        awk -v k="$1" '{ v[NR] = $1 } END {
            if (NR == 0) exit
            printf "%-8s n=%-5d p50 %7.2f ms  p90 %7.2f ms  p99 %7.2f ms  max %7.2f ms\n", k, NR,
                v[int(NR * 0.50 + 0.999)], v[int(NR * 0.90 + 0.999)], v[int(NR * 0.99 + 0.999)], v[NR] }'
}
for kind in ipv4 ipv6 ipv6/56 miss all; do pct "$kind"; done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

# The plans: EXPLAIN (ANALYZE, BUFFERS) of the daemon's own statement, one query of each kind.
for kind in ipv4 ipv6 ipv6/56; do
    read -r _ ip at < <(grep -m1 "^$kind " "$tmp/queries")
    echo "--- $kind: radacctd attribution --explain --ip $ip --at $at"
    "$daemon_bin" attribution --config "$tmp/config.toml" --explain --ip "$ip" --at "$at"
done
psql "$url" -qXc "SELECT relname AS relation, pg_size_pretty(pg_relation_size(oid)) AS size FROM pg_class WHERE relname LIKE 'radacct%' AND relkind IN ('r', 'i') AND pg_relation_size(oid) > 0 ORDER BY pg_relation_size(oid) DESC"
