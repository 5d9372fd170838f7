# Shared by the benchmark scripts (run-load.sh, compare-freeradius.sh, pg-floor.sh): sourced,
# not run. Defines functions only, plus `repo` (the repository root), `target_dir` (cargo's
# target directory, absolute) and where the Debian FreeRADIUS package keeps its configuration
# (`FR_CONF`) and PostgreSQL schema (`FR_PG_SCHEMA`), and changes to the repository root.

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
target_dir=${CARGO_TARGET_DIR:-$repo/target}
case "$target_dir" in /*) ;; *) target_dir=$repo/$target_dir ;; esac
FR_CONF=/etc/freeradius/3.0
FR_PG_SCHEMA=$FR_CONF/mods-config/sql/main/postgresql/schema.sql

# usage SCRIPT: prints the comment block at the top of SCRIPT (after the #! line).
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$1"; }

# The PostgreSQL admin URL databases are created from.
pg_admin_url() {
    echo "${RADACCTD_BENCH_DATABASE_URL:-${RADACCTD_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}}"
}

# url_with_db URL DB: postgres://user@host:port/db?params with the database replaced.
url_with_db() { printf '%s\n' "$1" | sed -E "s#^(postgres(ql)?://[^/?]*)(/[^?]*)?#\\1/$2#"; }

# free_port tcp|udp: a port nobody on 127.0.0.1 listens on now, below the kernel's ephemeral
# range, so that no listener bound to port 0 (a daemon's API) or client socket takes it before
# the daemon binds it.
free_port() {
    local p flags=-Hltn low
    [ "$1" = udp ] && flags=-Hlun
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    [ "$low" -gt 10001 ] || low=32768
    while :; do
        p=$(shuf -i "10000-$((low - 1))" -n 1)
        ss "$flags" "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return; }
    done
}

# release_bins SCRIPT BUILD NAME...: `cargo build --release` of the binaries NAME when BUILD is
# 1; exits (2) naming SCRIPT when one is missing.
release_bins() {
    local script=$1 build=$2 name
    shift 2
    if [ "$build" = 1 ]; then
        local args=()
        for name in "$@"; do args+=(--bin "$name"); done
        cargo build --release "${args[@]}" >&2
    fi
    for name in "$@"; do
        [ -x "$target_dir/release/$name" ] ||
            { echo "$script: $target_dir/release/$name missing (cargo build --release)" >&2; exit 2; }
    done
}

# stop_pid PID TRIES: SIGTERM, up to TRIES × 0.1 s for it to exit, then SIGKILL; reaps it.
stop_pid() {
    local pid=$1 tries=$2
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 "$tries"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}

# listener_address LOG PID TRIES: waits up to TRIES × 0.1 s for the daemon PID to log (JSON) its
# accounting listener in LOG and prints its address. Returns 1 if the daemon exited first, 2 if
# it did not bind in time.
listener_address() {
    local log=$1 pid=$2 tries=$3 addr
    for _ in $(seq 1 "$tries"); do
        addr=$(grep -m1 'accounting listener bound' "$log" 2>/dev/null |
            grep -o '"address":"[^"]*"' | cut -d'"' -f4 || true)
        [ -n "$addr" ] && { echo "$addr"; return 0; }
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 2
}

# CPU time (user + system, in clock ticks) of a process; 0 when it is gone.
ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Busy clock ticks of the whole machine so far.
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
# pg_pids ADMIN DB: the backends of database DB plus the cluster's shared writers (WAL writer,
# checkpointer, background writer).
pg_pids() {
    psql "$1" -AtXc "SELECT pid FROM pg_stat_activity WHERE datname = '$2' OR backend_type IN ('walwriter', 'checkpointer', 'background writer')" 2>/dev/null
}
