#!/usr/bin/env bash
# Side by side: stock FreeRADIUS 3.2 + rlm_sql_postgresql and radacctd, the same workload from
# the same load generator, on the same PostgreSQL and machine.
#
#   benches/compare-freeradius.sh [--sessions N] [--windows 64,256,1024] [--fillfactor F]
#                                 [--fr-site acct|stock] [--no-notify] [--no-build] [--keep]
#                                 [--out DIR]
#                                 [-- EXTRA-BENCH-ARGS...]
#
# For every window: two fresh databases (FreeRADIUS's schema.sql from the installed package in
# one; radacctd migrates its own into the other), a private FreeRADIUS (stock radiusd.conf and
# queries.conf, a copy of /etc/freeradius/3.0 in a temporary directory, accounting-only virtual
# server `preacct { preprocess acct_unique } accounting { sql; if (noop) { ok } }` as
# tests/it/common/freeradius.rs runs it; with --fr-site stock, the preacct and accounting sections
# of Debian's stock sites-available/default, copied at run time, with every module the stock
# install enables plus sql: `preprocess acct_unique suffix files` then `detail unix -sql exec
# attr_filter.accounting_response`, which is what "stock FreeRADIUS with rlm_sql accounting"
# runs on an ISP's RADIUS host, detail files included) and the release radacctd, each started just before its
# run and stopped after it; radacctd-bench drives each with N sessions × (Start, Interim-Update,
# Stop) and --verify-db checks every session's final row; then both databases are exported
# (acctuniqueid, counters, session time, stop cause, open/closed) and must be identical. The
# order alternates per window (FreeRADIUS first at the 1st and 3rd window) so that drift in
# background load does not favour one side.
#
# Same settings on both sides: synchronous_commit = on (set on both databases), default
# fillfactor on both radacct tables (PostgreSQL's default 100; --fillfactor F sets F on both,
# radacctd's table then being created by `radacctd migrate` first), the same UDP receive buffer request (8 MiB, capped by
# net.core.rmem_max), same client, secret and machine. Different by design and printed: the
# connection pool (FreeRADIUS stock: one connection per server thread, up to
# thread pool max_servers = 32; radacctd: database.max_connections = 8, of which its
# group-commit writer uses up to four, one per commit in flight),
# and the indexes (radacctd's EnsureIndexes adds four for its
# API and jobs, so it maintains 10 indexes on radacct to FreeRADIUS's 6; run with
# RADACCTD__JOBS__ENSURE_INDEXES=false for the same 6). Both are printed per window, with the
# inserts, updates and HOT updates PostgreSQL counted. FR_THREADS=N sets FreeRADIUS's
# max_servers (and so its pool) to N.
#
# --no-notify disables radacctd's change-notification triggers (migration 0003, docs/HA.md)
# before its run: the difference to a run without it is what index coherence across nodes costs.
#
# Needs: root or sudo for apt-get when the Debian packages freeradius, freeradius-postgresql and
# freeradius-utils are missing; a PostgreSQL reachable with the admin URL in
# RADACCTD_BENCH_DATABASE_URL, else RADACCTD_TEST_DATABASE_URL, else
# postgres://postgres@127.0.0.1:5432/postgres (FreeRADIUS gets host, port, user and password
# from it); psql.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

sessions=25000
windows=64,256,1024
fillfactor=
fr_site=acct
notify=1
build=1
keep=0
out=
while [ $# -gt 0 ]; do
    case "$1" in
        --sessions) sessions=$2; shift 2 ;;
        --windows) windows=$2; shift 2 ;;
        --fillfactor) fillfactor=$2; shift 2 ;;
        --fr-site)
            fr_site=$2; shift 2
            case "$fr_site" in acct|stock) ;; *) echo "compare-freeradius.sh: --fr-site is acct or stock" >&2; exit 2 ;; esac ;;
        --no-build) build=0; shift ;;
        --no-notify) notify=0; shift ;;
        --keep) keep=1; shift ;;
        --out) out=$2; shift 2 ;;
        --) shift; break ;;
        -h|--help) usage "$0"; exit 0 ;;
        *) echo "compare-freeradius.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
extra_args=("$@")

# --- FreeRADIUS packages -------------------------------------------------------------------
FR_BIN=/usr/sbin/freeradius
need_pkgs=()
[ -x "$FR_BIN" ] && [ -f "$FR_CONF/radiusd.conf" ] || need_pkgs+=(freeradius)
[ -f /usr/lib/freeradius/rlm_sql_postgresql.so ] || need_pkgs+=(freeradius-postgresql)
command -v radclient >/dev/null || need_pkgs+=(freeradius-utils)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
    echo "installing ${need_pkgs[*]} (apt-get)" >&2
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
        freeradius freeradius-postgresql freeradius-utils >&2
fi
fr_version=$("$FR_BIN" -v 2>/dev/null || true)
fr_version=$(printf '%s\n' "$fr_version" | grep -m1 -o 'Version [0-9.]*' || echo unknown)
command -v psql >/dev/null || { echo "compare-freeradius.sh: psql is required" >&2; exit 2; }

release_bins compare-freeradius.sh "$build" radacctd radacctd-bench
daemon_bin=$target_dir/release/radacctd
bench_bin=$target_dir/release/radacctd-bench

admin=$(pg_admin_url)
tmp=$(mktemp -d /tmp/radacctd-compare.XXXXXX)
chmod 755 "$tmp"
[ -n "$out" ] || out=$target_dir/benchruns/$(date -u +%Y%m%dT%H%M%SZ)-compare
mkdir -p "$out"
server_pid=
dbs=()

cleanup() {
    set +e
    stop_server
    if [ "$keep" = 0 ]; then
        for d in "${dbs[@]}"; do
            psql "$admin" -qXc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1
        done
        rm -rf "$tmp"
    else
        echo "kept: databases ${dbs[*]}, files in $tmp" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_server() {
    stop_pid "$server_pid" 100
    server_pid=
}

# host, port, user, password of the admin URL for rlm_sql (a socket directory as ?host=).
pg_part() {
    local u=${admin#postgres://}; u=${u#postgresql://}
    local query= auth= hostport= user= pass= host= port=5432
    case "$u" in *\?*) query=${u#*\?}; u=${u%%\?*} ;; esac
    u=${u%%/*}
    case "$u" in *@*) auth=${u%@*}; hostport=${u##*@} ;; *) hostport=$u ;; esac
    user=${auth%%:*}; case "$auth" in *:*) pass=${auth#*:} ;; esac
    host=${hostport%:*}; case "$hostport" in *:*) port=${hostport##*:} ;; esac
    local kv
    for kv in ${query//&/ }; do
        case "$kv" in host=*) host=${kv#host=} ;; port=*) port=${kv#port=} ;;
            user=*) user=${kv#user=} ;; password=*) pass=${kv#password=} ;; esac
    done
    [ -n "$host" ] || host=/var/run/postgresql
    [ -n "$user" ] || user=${USER:-postgres}
    case "$1" in host) echo "$host" ;; port) echo "$port" ;; user) echo "$user" ;; password) echo "$pass" ;; esac
}

# --- the private FreeRADIUS ----------------------------------------------------------------
# A copy of /etc/freeradius/3.0 with radiusd.conf's paths moved into $1, run as the caller, no
# proxying; only preprocess, always, expr and sql enabled; one accounting-only server.
write_raddb() {
    local dir=$1 db=$2 port=$3 raddb=$1/raddb
    mkdir -p "$dir/log" "$dir/run"
    cp -a "$FR_CONF" "$raddb"
    awk -v raddb="$raddb" -v logdir="$dir/log" -v rundir="$dir/run" -v threads="${FR_THREADS:-}" '
        function key(l) { sub(/^[ \t]+/, "", l); split(l, a, /[ \t=]/); return a[1] }
        /^[ \t]*#/ { print; next }
        /^[ \t]*[a-z_]+[ \t]*=/ {
            k = key($0)
            if (k == "raddbdir") { print "raddbdir = " raddb; seen[k] = 1; next }
            if (k == "logdir") { print "logdir = " logdir; seen[k] = 1; next }
            if (k == "run_dir") { print "run_dir = " rundir; seen[k] = 1; next }
            if (k == "user" || k == "group") { print "#" $0 "\t# compare-freeradius.sh: run as the caller"; next }
            if (k == "proxy_requests") { print "proxy_requests = no"; seen[k] = 1; next }
            if (k == "colourise") { print "\tcolourise = no"; next }
            if (k == "max_servers" && threads != "") { print "\tmax_servers = " threads; next }
        }
        { print }
        END { if (!seen["raddbdir"] || !seen["logdir"] || !seen["run_dir"] || !seen["proxy_requests"]) exit 3 }
    ' "$FR_CONF/radiusd.conf" >"$raddb/radiusd.conf" ||
        { echo "compare-freeradius.sh: the stock radiusd.conf lacks a setting this script rewrites" >&2; exit 1; }
    cat >"$raddb/clients.conf" <<EOF
client localhost {
	ipaddr = 127.0.0.1
	proto = *
	secret = "testing123"
	require_message_authenticator = no
	nas_type = other
}
EOF
    if [ "$fr_site" = stock ]; then
        # Every module the stock install enables (eap needs its inner-tunnel server); only the
        # stock default server, which listens on the standard ports, is replaced below.
        rm -f "$raddb/sites-enabled/default"
    else
        rm -rf "$raddb/mods-enabled" "$raddb/sites-enabled"
        mkdir "$raddb/mods-enabled" "$raddb/sites-enabled"
        for m in always expr preprocess; do ln -s "../mods-available/$m" "$raddb/mods-enabled/$m"; done
    fi
    local pw=
    [ -n "$(pg_part password)" ] && pw="	password = \"$(pg_part password)\""
    cat >"$raddb/mods-enabled/sql" <<EOF
sql {
	dialect = "postgresql"
	driver = "rlm_sql_\${dialect}"
	postgresql {
		send_application_name = yes
	}
	server = "$(pg_part host)"
	port = $(pg_part port)
	login = "$(pg_part user)"
$pw
	radius_db = "$db"
	acct_table1 = "radacct"
	acct_table2 = "radacct"
	postauth_table = "radpostauth"
	authcheck_table = "radcheck"
	groupcheck_table = "radgroupcheck"
	authreply_table = "radreply"
	groupreply_table = "radgroupreply"
	usergroup_table = "radusergroup"
	delete_stale_sessions = yes
	pool {
		start = \${thread[pool].start_servers}
		min = \${thread[pool].min_spare_servers}
		max = \${thread[pool].max_servers}
		spare = \${thread[pool].max_spare_servers}
		uses = 0
		retry_delay = 30
		lifetime = 0
		idle_timeout = 60
	}
	read_clients = no
	client_table = "nas"
	group_attribute = "SQL-Group"
	\$INCLUDE \${modconfdir}/\${.:name}/main/\${dialect}/queries.conf
}
EOF
    if [ "$fr_site" = stock ]; then
        {
            echo "server default {"
            printf 'listen {\n\ttype = acct\n\tipaddr = 127.0.0.1\n\tport = %s\n\trecv_buff = 8388608\n}\n' "$port"
            # The stock sections verbatim (comments dropped).
            awk '/^(preacct|accounting) \{/, /^\}/' "$FR_CONF/sites-available/default" |
                grep -v '^[[:space:]]*#' | grep -v '^[[:space:]]*$'
            echo "}"
        } >"$raddb/sites-enabled/acct"
        return
    fi
    cat >"$raddb/sites-enabled/acct" <<EOF
server default {
listen {
	type = acct
	ipaddr = 127.0.0.1
	port = $port
	recv_buff = 8388608
}
preacct {
	preprocess
	acct_unique
}
accounting {
	sql
	# rlm_sql returns noop when its queries change no row; the stock default site answers
	# those because detail returned ok before; this gives the same answers without detail.
	if (noop) {
		ok
	}
}
}
EOF
}

start_freeradius() { # dir db -> sets server_pid, server_addr
    local dir=$1 db=$2 port
    port=$(free_port udp)
    write_raddb "$dir" "$db" "$port"
    "$FR_BIN" -f -d "$dir/raddb" </dev/null >"$dir/console.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 300); do
        grep -q 'Ready to process requests' "$dir/log/radius.log" 2>/dev/null && break
        kill -0 "$server_pid" 2>/dev/null || { cat "$dir/console.log" "$dir/log/radius.log" >&2; exit 1; }
        sleep 0.05
    done
    grep -q 'Ready to process requests' "$dir/log/radius.log" ||
        { echo "FreeRADIUS did not start" >&2; cat "$dir/log/radius.log" >&2; exit 1; }
    server_addr=127.0.0.1:$port
}

start_radacctd() { # dir url -> sets server_pid, server_addr
    local dir=$1 url=$2
    mkdir -p "$dir"
    RADACCTD__DATABASE__URL=$url \
    RADACCTD__RADIUS__LISTEN=127.0.0.1:0 \
    RADACCTD__RADIUS__RECV_BUFFER_BYTES=8388608 \
    RADACCTD__API__LISTEN=127.0.0.1:0 \
    RADACCTD__METRICS__LISTEN=127.0.0.1:0 \
    RADACCTD__JOURNAL__PATH=$dir/radacctd.journal \
    RADACCTD__LOG__FORMAT=json \
        "$daemon_bin" serve >"$dir/daemon.log" 2>&1 &
    server_pid=$!
    local rc=0
    server_addr=$(listener_address "$dir/daemon.log" "$server_pid" 600) || rc=$?
    case "$rc" in
        0) ;;
        1) cat "$dir/daemon.log" >&2; exit 1 ;;
        *) echo "radacctd did not start" >&2; exit 1 ;;
    esac
}

hz=$(getconf CLK_TCK)

# run_bench NAME DB URL: drives the running server; leaves rates in $dir/rates, CPU in $dir/cpu.
run_bench() {
    local name=$1 db=$2 url=$3
    local dir=$tmp/$name
    declare -A pg0=() seen=()
    local p
    for p in $(pg_pids "$admin" "$db"); do pg0[$p]=$(ticks "$p"); done
    local s0 b0 t0 l0 s1 b1 t1 l1 rc pg=0
    s0=$(ticks "$server_pid"); b0=$(busy); t0=$(date +%s.%N); l0=$(cut -d' ' -f1 /proc/loadavg)
    set +e
    /usr/bin/time -f '%U %S' -o "$dir/time" "$bench_bin" --target "$server_addr" \
        --sessions "$sessions" --window "$window" "${extra_args[@]}" \
        --verify-db "$url" --json "$dir/summary.json" >"$dir/bench.out" 2>"$dir/bench.err"
    rc=$?
    set -e
    t1=$(date +%s.%N); b1=$(busy); s1=$(ticks "$server_pid"); l1=$(cut -d' ' -f1 /proc/loadavg)
    for p in $(pg_pids "$admin" "$db") "${!pg0[@]}"; do
        [ -n "${seen[$p]:-}" ] && continue
        seen[$p]=1
        local now before
        now=$(ticks "$p"); before=${pg0[$p]:-0}
        if [ "$now" -ge "$before" ]; then pg=$((pg + now - before)); fi
    done
    {
        echo "+ radacctd-bench --target <$name> --sessions $sessions --window $window ${extra_args[*]} --verify-db <its database>"
        cat "$dir/bench.out"
    } >"$out/$name.bench.out"
    if [ "$rc" != 0 ]; then
        echo "radacctd-bench against $name exited with $rc" >&2
        tail -30 "$dir/bench.out" "$dir/bench.err" >&2
        exit 1
    fi
    awk '$1 ~ /^(start|interim|stop|total)$/ { print $1, $4 }' "$dir/bench.out" >"$dir/rates"
    awk -v t0="$t0" -v t1="$t1" -v s=$((s1 - s0)) -v p="$pg" -v m=$((b1 - b0)) -v hz="$hz" \
        -v bc="$(awk '{print $1+$2}' "$dir/time")" -v n="$(awk '$1=="total"{print $3}' "$dir/bench.out")" \
        -v l0="$l0" -v l1="$l1" -v name="$name" 'BEGIN {
        w = t1 - t0; s /= hz; p /= hz; m /= hz; rest = m - s - p - bc; if (rest < 0) rest = 0;
        printf "%-10s wall %6.2f s  server %6.2f s (%3.0f%%, %.3f ms/pkt)  postgres %6.2f s (%3.0f%%, %.3f ms/pkt)  bench %5.2f s  rest %5.2f s  load %s→%s\n",
            name, w, s, 100*s/w, 1000*s/n, p, 100*p/w, 1000*p/n, bc, rest, l0, l1
    }' >"$dir/cpu"
    grep '^verify-db' "$dir/bench.out" | sed "s/^/  $name: /" >"$dir/verify"
}

export_rows() { # url file
    psql "$1" -AtX -F'|' -c "SELECT acctuniqueid, acctinputoctets, acctoutputoctets, acctsessiontime, acctterminatecause, acctstoptime IS NULL FROM radacct ORDER BY 1" >"$2"
}

# --- the runs ------------------------------------------------------------------------------
echo "FreeRADIUS: $FR_BIN ($fr_version), stock queries.conf, virtual server: $fr_site; radacctd: $daemon_bin"
echo "PostgreSQL: $(psql "$admin" -AtXc 'SHOW server_version') at $(pg_part host):$(pg_part port); $(nproc) CPUs; $sessions sessions × (Start, Interim-Update, Stop) per run"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
i=0
failed=0
declare -a summary_lines=()
for window in ${windows//,/ }; do
    i=$((i + 1))
    fr_db=fr_cmp_$$_$window
    rad_db=rad_cmp_$$_$window
    for d in "$fr_db" "$rad_db"; do
        psql "$admin" -qXc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1
        psql "$admin" -qXc "CREATE DATABASE $d" >/dev/null
        dbs+=("$d")
        psql "$admin" -qXc "ALTER DATABASE $d SET synchronous_commit = on" >/dev/null
    done
    fr_url=$(url_with_db "$admin" "$fr_db")
    rad_url=$(url_with_db "$admin" "$rad_db")
    psql "$fr_url" -qX -v ON_ERROR_STOP=1 -f "$FR_PG_SCHEMA" >/dev/null
    if [ -n "$fillfactor" ] || [ "$notify" = 0 ]; then
        RADACCTD__DATABASE__URL=$rad_url RADACCTD__LOG__FORMAT=json "$daemon_bin" migrate >/dev/null 2>&1
    fi
    if [ -n "$fillfactor" ]; then
        for u in "$fr_url" "$rad_url"; do
            psql "$u" -qXc "ALTER TABLE radacct SET (fillfactor = $fillfactor)" >/dev/null
        done
    fi
    if [ "$notify" = 0 ]; then psql "$rad_url" -qXc "ALTER TABLE radacct DISABLE TRIGGER USER" >/dev/null; fi
    mkdir -p "$tmp/fr-$window" "$tmp/rad-$window"
    order=(fr rad); [ $((i % 2)) = 0 ] && order=(rad fr)
    for who in "${order[@]}"; do
        if [ "$who" = fr ]; then
            start_freeradius "$tmp/fr-$window" "$fr_db"
            run_bench "fr-$window" "$fr_db" "$fr_url"
            cp "$tmp/fr-$window/log/radius.log" "$out/fr-$window.radius.log"
        else
            start_radacctd "$tmp/rad-$window" "$rad_url"
            run_bench "rad-$window" "$rad_db" "$rad_url"
            cp "$tmp/rad-$window/daemon.log" "$out/rad-$window.daemon.log"
        fi
        stop_server
    done
    export_rows "$fr_url" "$out/fr-$window.rows"
    export_rows "$rad_url" "$out/rad-$window.rows"
    nfr=$(wc -l <"$out/fr-$window.rows"); nrad=$(wc -l <"$out/rad-$window.rows")
    if cmp -s "$out/fr-$window.rows" "$out/rad-$window.rows"; then
        same="identical ($nfr rows: acctuniqueid, input/output octets, session time, stop cause, open/closed)"
    else
        same="DIFFERENT (FreeRADIUS $nfr rows, radacctd $nrad rows)"
        failed=1
        diff "$out/fr-$window.rows" "$out/rad-$window.rows" | head -20 >&2 || true
    fi
    settings=$(for d in "$fr_url" "$rad_url"; do
        psql "$d" -AtXc "SELECT current_setting('synchronous_commit') || ', ' || coalesce((SELECT array_to_string(reloptions, ',') FROM pg_class WHERE relname = 'radacct'), 'fillfactor=100 (default)') || ', ' || (SELECT count(*) FROM pg_indexes WHERE tablename = 'radacct') || ' indexes on radacct, ' || (SELECT n_tup_ins || ' inserts, ' || n_tup_upd || ' updates (' || n_tup_hot_upd || ' HOT)' FROM pg_stat_user_tables WHERE relname = 'radacct')"
    done | paste -sd'|')
    {
        echo
        echo "window $window: rows $same"
        echo "  settings: FreeRADIUS synchronous_commit ${settings%%|*}; radacctd synchronous_commit ${settings##*|}"
        cat "$tmp/fr-$window/verify" "$tmp/rad-$window/verify"
        sed 's/^/  cpu /' "$tmp/fr-$window/cpu" "$tmp/rad-$window/cpu"
    } | tee -a "$out/report.txt"
    while read -r phase fr_rate; do
        rad_rate=$(awk -v p="$phase" '$1==p {print $2}' "$tmp/rad-$window/rates")
        summary_lines+=("$(awk -v w="$window" -v p="$phase" -v f="$fr_rate" -v r="$rad_rate" \
            'BEGIN { printf "%6s  %-8s %12.0f %12.0f %8.1f×", w, p, f, r, (f > 0 ? r / f : 0) }')")
    done <"$tmp/fr-$window/rates"
done

{
    echo
    echo "window  phase    FreeRADIUS     radacctd    ratio   (Accounting-Requests answered per second)"
    printf '%s\n' "${summary_lines[@]}"
    echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$out/report.txt"
echo "(bench outputs, logs and row exports in $out)"
exit "$failed"
