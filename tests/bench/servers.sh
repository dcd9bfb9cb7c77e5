# shellcheck shell=bash
# Start, stop and provision the three servers the benchmark compares, each with an
# equivalent configuration generated here: loopback only, the same self-signed
# certificate, STARTTLS required, a listen backlog of 1024 (tokio's, Kith's), SCRAM-SHA-1
# with 4096 iterations, rate limits off, the default storage of each, the same features
# (roster, presence, messages, offline storage, disco, ping, vCard); no s2s, no MAM, no
# carbons, no stream management.
#
# PROSODY_EXTRA_MODULES (e.g. '; "smacks"') and EJABBERD_EXTRA_MODULES (YAML lines
# under `modules:`) add features for benchmarks that need them (sm_resume_peers.sh).
#
# Each peer also runs with its message archive on, as Kith always does: the servers
# `prosody-mam` (mod_mam, every message archived, kept forever, in Prosody's default
# storage) and `ejabberd-mam` (mod_mam with `default: always`, in ejabberd's default
# Mnesia storage). They share their base server's users and data directory.
#
# BENCH_MUC=1 adds group chat (muc.sh): Prosody's `muc` component and ejabberd's
# mod_muc on conference.DOMAIN (Kith's is always on groups.DOMAIN), each archiving room
# messages (Prosody mod_muc_mam, ejabberd mod_mam with `mam: true` for new rooms; Kith
# archives rooms by default) unless BENCH_MUC_ARCHIVE=0. `muc_service NAME` prints the
# service to join. Limit raised for it: Prosody's internal archive store keeps at most
# 10 000 items per room by default and then truncates the room's archive
# (storage_archive_item_limit, raised to 10 000 000 so that no run hits it).
# BENCH_MUC_STORAGE=sql puts both peers' room archives in SQLite instead of their
# default storage, as Kith's is (Prosody mod_storage_sql with lua-dbi-sqlite3, ejabberd
# with erlang-p1-sqlite3, installed with apt-get when missing; what both projects
# recommend for archives).
#
# Sourced by compare.sh and smoke.sh. Expects: WORK (scratch dir), BENCH (kith-bench
# binary), KITH_BIN, DOMAIN, PASSWORD. Each start_* sets SERVER_PID (the process whose
# memory and CPU are measured) and PORT.

DOMAIN=${DOMAIN:-localhost}
PASSWORD=${PASSWORD:-bench-pass}
STOP_DEADLINE=${STOP_DEADLINE:-20}
# Below the ephemeral range (32768-60999), where a client socket may hold the port.
PROSODY_PORT=${PROSODY_PORT:-17222}
EJABBERD_PORT=${EJABBERD_PORT:-18222}
EJABBERD_API_PORT=${EJABBERD_API_PORT:-18280}
KITH_PORT=${KITH_PORT:-19222}
BENCH_MUC=${BENCH_MUC:-0}
BENCH_MUC_ARCHIVE=${BENCH_MUC_ARCHIVE:-1}
BENCH_MUC_STORAGE=${BENCH_MUC_STORAGE:-default}

# muc_service NAME: the MUC service of server NAME.
muc_service() {
  case $1 in
  kith) echo "groups.$DOMAIN" ;;
  *) echo "conference.$DOMAIN" ;;
  esac
}

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# wait_port PORT SECONDS: until something accepts TCP connections on 127.0.0.1:PORT.
wait_port() {
  local port=$1 deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  log "nothing listens on port $port after $2 s"
  return 1
}

# port_free PORT: true when nothing accepts connections on 127.0.0.1:PORT.
port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pick_port BASE: the first free port from BASE on (another test may hold BASE).
pick_port() {
  local port=$1
  while ! port_free "$port" && ((port < $1 + 100)); do
    port=$((port + 1))
  done
  echo "$port"
}

# stop_pid PID: SIGTERM, then SIGKILL of the same PID after STOP_DEADLINE seconds.
stop_pid() {
  local pid=$1 deadline=$((SECONDS + STOP_DEADLINE))
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "PID $pid still running ${STOP_DEADLINE}s after SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
}

# wait_gone PORT SECONDS: until the port is free again.
wait_gone() {
  local port=$1 deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || return 0
    sleep 0.2
  done
  return 1
}

install_peers() {
  if command -v prosody >/dev/null && command -v ejabberdctl >/dev/null; then
    return 0
  fi
  log "installing prosody and ejabberd from Debian"
  # The packages' own services stay off: policy-rc.d or no init; we never use them.
  # shellcheck source=../../scripts/lib/apt.sh
  source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/apt.sh"
  apt_ensure --with-recommends prosody ejabberd >/dev/null
}

make_cert() {
  mkdir -p "$WORK/tls"
  [ -f "$WORK/tls/cert.pem" ] || "$BENCH" --domain "$DOMAIN" cert "$WORK/tls"
}

# ---------------------------------------------------------------- Kith

kith_config() {
  mkdir -p "$WORK/kith/data"
  cat >"$WORK/kith/kith.toml" <<EOF
domain = "$DOMAIN"
data_dir = "$WORK/kith/data"

[listen]
c2s = "127.0.0.1:$KITH_PORT"

[tls]
cert = "$WORK/tls/cert.pem"
key = "$WORK/tls/key.pem"

[limits]
connections_per_ip = 0
auth_failures_per_minute = 0

[auth]
scram_iterations = 4096
EOF
}

# provision_kith COUNT: users u1..uCOUNT (only those not created yet).
provision_kith() {
  local count=$1 have=0 i
  kith_config
  [ -f "$WORK/kith/users" ] && have=$(cat "$WORK/kith/users")
  ((have >= count)) && return 0
  log "kith: creating users $((have + 1))..$count"
  for ((i = have + 1; i <= count; i++)); do
    printf '%s\n' "$PASSWORD" | "$KITH_BIN" --config "$WORK/kith/kith.toml" user add "u$i@$DOMAIN" \
      >/dev/null 2>>"$WORK/kith/provision.log"
  done
  echo "$count" >"$WORK/kith/users"
}

start_kith() {
  KITH_PORT=$(pick_port "$KITH_PORT")
  kith_config
  # KITH_CPUS (e.g. 0 or 0,1): pin the server to these cores (cores.sh).
  ${KITH_CPUS:+taskset -c "$KITH_CPUS"} "$KITH_BIN" --config "$WORK/kith/kith.toml" serve 2>>"$WORK/kith/kith.log" &
  SERVER_PID=$!
  PORT=$KITH_PORT
  wait_port "$PORT" 60
}

stop_kith() {
  stop_pid "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

# ---------------------------------------------------------------- Prosody

prosody_config() {
  local dir=$WORK/prosody
  mkdir -p "$dir/data"
  cp "$WORK/tls/cert.pem" "$WORK/tls/key.pem" "$dir/"
  cat >"$dir/prosody.cfg.lua" <<EOF
-- Generated by tests/bench/servers.sh
run_as_root = true
pidfile = "$dir/prosody.pid"
data_path = "$dir/data"
admin_socket = "$dir/prosody.sock"
network_backend = "epoll"
network_settings = { tcp_backlog = 1024 }
interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_ports = { $PROSODY_PORT }
c2s_direct_tls_ports = { }
s2s_ports = { }
c2s_require_encryption = true
authentication = "internal_hashed"
default_iteration_count = 4096
storage = "internal"
log = { { levels = { min = "warn" }, to = "file", filename = "$dir/prosody.log" } }
modules_enabled = { "roster"; "saslauth"; "tls"; "disco"; "ping"; "vcard"; "admin_shell"; "posix"${PROSODY_EXTRA_MODULES:-}$(prosody_mam_module) }
$(prosody_mam_options)
modules_disabled = { "s2s"; "s2s_auth_certs"; "limits" }
ssl = { certificate = "$dir/cert.pem"; key = "$dir/key.pem" }
VirtualHost "$DOMAIN"
$(prosody_muc)
EOF
  chown -R prosody:prosody "$dir"
}

# prosody-mam: mod_mam archives every 1:1 message (default_archive_policy), forever,
# with no per-user item limit (the internal store's default of 10 000 would truncate).
prosody_mam_module() { [ "${PROSODY_MAM:-0}" = 1 ] && printf '; "mam"'; true; }
prosody_mam_options() {
  [ "${PROSODY_MAM:-0}" = 1 ] || return 0
  printf 'default_archive_policy = true\narchive_expires_after = "never"\n'
  printf 'storage_archive_item_limit = 10000000\n'
}

# The MUC component (BENCH_MUC=1): Debian's mod_muc; rooms are created by whoever joins
# first (restrict_room_creation off), history 20 messages, no rate limit (mod_muc has
# none; mod_muc_limits is not installed); mod_muc_mam archives every room in the
# default (internal, file) storage, kept forever.
prosody_muc() {
  [ "$BENCH_MUC" = 1 ] || return 0
  # Options below the Component line are the component's own.
  printf 'Component "conference.%s" "muc"\n' "$DOMAIN"
  printf '  restrict_room_creation = false\n'
  [ "$BENCH_MUC_ARCHIVE" = 1 ] || return 0
  printf '  modules_enabled = { "muc_mam" }\n  muc_log_all_rooms = true\n'
  printf '  muc_log_expires_after = "never"\n  storage_archive_item_limit = 10000000\n'
  if [ "$BENCH_MUC_STORAGE" = sql ]; then
    printf '  storage = { muc_log = "sql" }\n'
    printf '  sql = { driver = "SQLite3", database = "prosody.sqlite" }\n'
  fi
}

start_prosody() {
  PROSODY_PORT=$(pick_port "$PROSODY_PORT")
  prosody_config
  prosody --config "$WORK/prosody/prosody.cfg.lua" -F >>"$WORK/prosody/stdout.log" 2>&1 &
  SERVER_PID=$!
  PORT=$PROSODY_PORT
  wait_port "$PORT" 60
}

stop_prosody() {
  stop_pid "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

start_prosody-mam() { PROSODY_MAM=1 start_prosody; }
stop_prosody-mam() { stop_prosody; }
provision_prosody-mam() { provision_prosody "$@"; }

# provision_prosody COUNT: creates users through the running server's admin shell,
# one `prosodyctl shell` session for all of them.
provision_prosody() {
  local count=$1 have=0 i
  [ -f "$WORK/prosody/users" ] && have=$(cat "$WORK/prosody/users")
  ((have >= count)) && return 0
  log "prosody: creating users $((have + 1))..$count"
  start_prosody
  for ((i = have + 1; i <= count; i++)); do
    printf 'user:create("u%s@%s", "%s")\n' "$i" "$DOMAIN" "$PASSWORD"
  done | timeout 1200 prosodyctl --config "$WORK/prosody/prosody.cfg.lua" shell \
    >>"$WORK/prosody/provision.log" 2>&1
  local rc=$?
  stop_prosody
  ((rc == 0)) || return 1
  echo "$count" >"$WORK/prosody/users"
}

# ---------------------------------------------------------------- ejabberd

EJ_NODE=ejabberd-bench@localhost

# The admin API listens only while users are being created (EJ_API=1).
ejabberd_api_listener() {
  [ "${EJ_API:-0}" = 1 ] || return 0
  printf '  -\n    port: %s\n    ip: "127.0.0.1"\n    module: ejabberd_http\n' "$EJABBERD_API_PORT"
  printf '    request_handlers:\n      /api: mod_http_api\n'
}

ejabberd_config() {
  local dir=$WORK/ejabberd
  mkdir -p "$dir/spool" "$dir/logs"
  cp "$WORK/tls/cert.pem" "$WORK/tls/key.pem" "$dir/"
  echo '{lookup, [file, native]}.' >"$dir/inetrc"
  cat >"$dir/ejabberdctl.cfg" <<EOF
ERLANG_NODE=$EJ_NODE
ERL_MAX_PORTS=65000
INET_DIST_INTERFACE=127.0.0.1
ERL_EPMD_ADDRESS=127.0.0.1
EOF
  cat >"$dir/ejabberd.yml" <<EOF
# Generated by tests/bench/servers.sh
hosts:
  - "$DOMAIN"
loglevel: warning
certfiles:
  - "$dir/cert.pem"
  - "$dir/key.pem"
listen:
  -
    port: $EJABBERD_PORT
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: true
    backlog: 1024
    max_stanza_size: 262144
    shaper: none
    access: c2s
$(ejabberd_api_listener)
auth_method: internal
$(ejabberd_sql)
auth_password_format: scram
auth_scram_hash: sha
s2s_access: none
acl:
  loopback:
    ip:
      - 127.0.0.0/8
access_rules:
  c2s:
    allow: all
shaper: {}
shaper_rules:
  max_user_sessions: 100
  max_user_offline_messages: 5000
  c2s_shaper: none
api_permissions:
  "bench provisioning":
    from:
      - ejabberd_ctl
      - mod_http_api
    who:
      acl: loopback
    what:
      - register
modules:
  mod_disco: {}
  mod_roster: {}
  mod_offline: {}
  mod_ping: {}
  mod_vcard: {}
$(ejabberd_muc)
$(ejabberd_mam)
${EJABBERD_EXTRA_MODULES:-}
EOF
  chown -R ejabberd:ejabberd "$dir"
}

# mod_muc (BENCH_MUC=1) on conference.DOMAIN with its defaults: anyone local may
# create rooms, max_users 200 per room, history_size 20, no room or message shaper,
# min_message_interval 0; rooms archived by mod_mam (default Mnesia storage) unless
# BENCH_MUC_ARCHIVE=0.
ejabberd_muc() {
  [ "$BENCH_MUC" = 1 ] || return 0
  printf '  mod_muc:\n    host: "conference.%s"\n    access_create: all\n' "$DOMAIN"
  if [ "$BENCH_MUC_ARCHIVE" = 1 ]; then
    printf '    default_room_options:\n      mam: true\n'
    printf '  mod_mam:\n    default: never\n'
    [ "$BENCH_MUC_STORAGE" != sql ] || printf '    db_type: sql\n'
  fi
}

# ejabberd-mam: mod_mam archives every 1:1 message (default: always) in Mnesia.
ejabberd_mam() {
  [ "${EJABBERD_MAM:-0}" = 1 ] || return 0
  [ "$BENCH_MUC" != 1 ] || { log "ejabberd-mam and BENCH_MUC=1 both configure mod_mam"; return 1; }
  printf '  mod_mam:\n    default: always\n'
}

# The SQL database of ejabberd (BENCH_MUC_STORAGE=sql): SQLite, only mod_mam uses it.
ejabberd_sql() {
  [ "$BENCH_MUC" = 1 ] && [ "$BENCH_MUC_STORAGE" = sql ] || return 0
  printf 'sql_type: sqlite\nsql_database: "%s"\n' "$WORK/ejabberd/ejabberd.db"
}

# install_muc_sql: the SQLite drivers of both peers (BENCH_MUC_STORAGE=sql).
install_muc_sql() {
  [ "$BENCH_MUC_STORAGE" = sql ] || return 0
  if ! ls /usr/lib/*/lua/5.4/dbd/sqlite3.so >/dev/null 2>&1 ||
    ! ls -d /usr/lib/erlang/lib/p1_sqlite3-* >/dev/null 2>&1; then
    log "installing lua-dbi-sqlite3 and erlang-p1-sqlite3 from Debian"
    # shellcheck source=../../scripts/lib/apt.sh
    source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/apt.sh"
    apt_ensure lua-dbi-sqlite3 erlang-p1-sqlite3 >/dev/null
  fi
}

# ejabberdctl run as root switches user with su, whose PAM session resets the
# open-files limit to 1024; setpriv keeps this shell's limit (needed for 10 000 sessions).
ejctl() {
  setpriv --reuid=ejabberd --regid=ejabberd --init-groups \
    env HOME=/var/lib/ejabberd ejabberdctl --config-dir "$WORK/ejabberd" \
    --config "$WORK/ejabberd/ejabberd.yml" --ctl-config "$WORK/ejabberd/ejabberdctl.cfg" --spool "$WORK/ejabberd/spool" \
    --logs "$WORK/ejabberd/logs" "$@"
}

start_ejabberd() {
  EJABBERD_PORT=$(pick_port "$EJABBERD_PORT")
  ejabberd_config
  ejctl foreground >>"$WORK/ejabberd/stdout.log" 2>&1 &
  EJ_WRAPPER=$!
  PORT=$EJABBERD_PORT
  wait_port "$PORT" 120 || return 1
  # The measured process is the Erlang VM, beam.smp, of our node.
  SERVER_PID=$(pgrep -n -f "beam.smp.*-name $EJ_NODE" || pgrep -n -f "beam.smp.*$EJ_NODE")
  [ -n "$SERVER_PID" ] || { log "no beam.smp for $EJ_NODE"; return 1; }
}

stop_ejabberd() {
  stop_pid "$SERVER_PID"
  stop_pid "$EJ_WRAPPER"
  wait "$EJ_WRAPPER" 2>/dev/null || true
  SERVER_PID=''
  EJ_WRAPPER=''
}

start_ejabberd-mam() { EJABBERD_MAM=1 start_ejabberd; }
stop_ejabberd-mam() { stop_ejabberd; }
provision_ejabberd-mam() { provision_ejabberd "$@"; }

# provision_ejabberd COUNT: registers users through ejabberd's admin API (the HTTP form
# of `ejabberdctl register`; one ejabberdctl process per user takes about a second).
provision_ejabberd() {
  local count=$1 have=0
  [ -f "$WORK/ejabberd/users" ] && have=$(cat "$WORK/ejabberd/users")
  ((have >= count)) && return 0
  log "ejabberd: creating users $((have + 1))..$count"
  EJABBERD_API_PORT=$(pick_port "$EJABBERD_API_PORT")
  EJ_API=1 start_ejabberd
  wait_port "$EJABBERD_API_PORT" 60
  timeout 1200 python3 - "$((have + 1))" "$count" "$DOMAIN" "$PASSWORD" "$EJABBERD_API_PORT" <<'EOF'
import http.client, json, sys
first, last, domain, password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[5]), timeout=30)
for i in range(first, last + 1):
    body = json.dumps({"user": f"u{i}", "host": domain, "password": password})
    conn.request("POST", "/api/register", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    text = resp.read()
    if resp.status != 200 and b"conflict" not in text and b"already" not in text:
        sys.exit(f"register u{i}: {resp.status} {text[:200]!r}")
EOF
  local rc=$?
  stop_ejabberd
  ((rc == 0)) || return 1
  echo "$count" >"$WORK/ejabberd/users"
}
