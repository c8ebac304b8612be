#!/usr/bin/env bash
# Gateway overhead benchmark (results in docs/performance.md, "Gateway overhead").
#
# Runs the same load against these targets on this machine, all in front of one Kling API
# simulator on 127.0.0.1:
#   direct            the simulator itself
#   nginx             nginx (the Debian package) as a plain keepalive reverse proxy
#   gateway           kling-audit gateway with durability "sync" (the default): every request
#                     record is fdatasync'ed before forwarding, every response record before
#                     answering
#   gateway-tmpfs     diagnostic only, not durable: the same gateway (durability "sync") with
#                     its ledger on tmpfs, where fdatasync returns at once; it separates the
#                     gateway's and the ledger's own work from the disk's sync latency
#   gateway-buffered  diagnostic only, not in the default list: durability "buffered"
#   gateway-queued    diagnostic only, not in the default list: durability "sync" with
#                     audit.inline_appends off, so every record goes through the writer
#                     thread's queue
#   floor             diagnostic only: the least a proxy on hyper can do (one upstream
#                     connection per caller connection, nothing checked or recorded;
#                     crates/gateway/examples/floorproxy.rs): what hyper costs here
#   floor-ledger      diagnostic only: the same proxy appending the gateway's two durable
#                     records per call to a ledger on the gateway's disk, and nothing else:
#                     what hyper and the write-ahead records cost without the gateway's checks
# Two workloads: GET /account/costs (cheap, full audited path) and POST /v1/videos/text2video
# (a create; the sim's concurrency and units are raised so creates answer 200). For each:
# p50/p99 at a fixed rate with an open-loop generator (crates/gateway/examples/loadgen.rs,
# latency from each request's scheduled send time), the proxy's CPU time per request, then
# maximum throughput with wrk at a few connection counts.
#
# usage: bench/gateway.sh [--out FILE.jsonl]
#        bench/gateway.sh --serve ENV_FILE   start every target, write their addresses, tokens
#                                            and pids to ENV_FILE as shell variables (ADDR_x,
#                                            TOKEN_x, PIDS_x, GET_PATH, POST_PATH, POST_BODY),
#                                            and hold them up until SIGTERM (or Ctrl-C when run
#                                            in the foreground): for profiling
# environment (defaults): RATE=1000 DURATION=10 WARMUP=2 WRK_SECS=10 WRK_CONNS="16 128 256"
#   WRK_THREADS=1 TARGETS="direct nginx gateway gateway-tmpfs floor floor-ledger"
#   WORKLOADS="get post" BENCH_TMPDIR=${TMPDIR:-/tmp} TMPFS_DIR=/dev/shm KEEP_TMP=0 SKIP_BUILD=0
#   KLING_AUDIT_BIN, LOADGEN_BIN, FLOOR_BIN: binaries to use instead of the ones built here
#
# Needs: cargo, python3 (JWT signing and the summary), curl; installs nginx and wrk with
# apt-get when missing. Touches no system nginx configuration or service: nginx runs from a
# configuration file in a temporary directory, in the foreground, as a child of this script.
# Everything listens on 127.0.0.1 only. Every process started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RATE=${RATE:-1000}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
WRK_SECS=${WRK_SECS:-10}
WRK_CONNS=${WRK_CONNS:-16 128 256}
TARGETS=${TARGETS:-direct nginx gateway gateway-tmpfs floor floor-ledger}
WRK_THREADS=${WRK_THREADS:-1}
WORKLOADS=${WORKLOADS:-get post}
OUT=""
SERVE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --serve) SERVE=$2; shift 2 ;;
    # The header comment, whatever its length.
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# --- tools ------------------------------------------------------------------------------
for tool in cargo python3 curl timeout; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required"
done
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  say "installing ${missing[*]} with apt-get"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# --- build --------------------------------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  say "building kling-audit and the load generator (release)"
  (cd "$ROOT" && cargo build --release --locked -q -p kling-audit \
    && cargo build --release --locked -q -p kling-audit-gateway --example loadgen \
      --example floorproxy)
fi
BIN=${KLING_AUDIT_BIN:-$ROOT/target/release/kling-audit}
LOADGEN=${LOADGEN_BIN:-$ROOT/target/release/examples/loadgen}
FLOOR=${FLOOR_BIN:-$ROOT/target/release/examples/floorproxy}
[ -x "$BIN" ] && [ -x "$LOADGEN" ] && [ -x "$FLOOR" ] \
  || die "binaries missing; run without SKIP_BUILD=1"

# --- processes and cleanup ----------------------------------------------------------------
T=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/kling-gw-bench.XXXXXX")
PIDS=()
cleanup() {
  local pid i
  # Newest first: the proxies let go of their upstream connections before the sim stops.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid=${PIDS[i]}
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  # The gateways seal their ledgers on SIGTERM (waited for above); anything still here is stuck.
  for pid in "${PIDS[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "${KEEP_TMP:-0}" = 1 ]; then
    say "kept $T ${SHM:-}"
  else
    rm -rf "$T"
    [ -z "${SHM:-}" ] || rm -rf "$SHM"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_line() { # file seconds: prints the first line once it exists
  local i
  for i in $(seq $(($2 * 10))); do
    if [ -s "$1" ]; then head -n1 "$1"; return 0; fi
    sleep 0.1
  done
  return 1
}
wait_http() { # url seconds: waits for any HTTP answer
  local i
  for i in $(seq $(($2 * 10))); do
    curl -s -o /dev/null --max-time 1 "$1" && return 0
    sleep 0.1
  done
  return 1
}
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
jwt() { # access_key secret_key: an HS256 token valid for two hours, as a Kling SDK signs
  python3 - "$1" "$2" <<'EOF'
import base64, hashlib, hmac, json, sys, time
enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
ak, sk = sys.argv[1], sys.argv[2]
now = int(time.time())
head = enc(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
body = enc(json.dumps({"iss": ak, "exp": now + 7200, "nbf": now - 5}, separators=(",", ":")).encode())
sig = enc(hmac.new(sk.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
print(f"{head}.{body}.{sig}")
EOF
}

# --- the simulator ------------------------------------------------------------------------
# The organisation's key pair: the sim accepts it, and the gateway re-signs with it.
ORG_AK="bench-org-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
ORG_SK="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
cat >"$T/sim.toml" <<EOF
[[keys]]
access_key = "$ORG_AK"
secret_key = "$ORG_SK"

# Enough slots and units that every create of the benchmark is admitted (200, not 429): a full
# run makes several million creates, and a million slots ran out in its last measurements.
[concurrency]
video = 1000000000
image = 1000000000

[lifecycle]
to_processing_ms = 100
to_final_ms = 200

[callbacks]
on_processing = false
on_final = false

[[account.packs]]
name = "Benchmark video pack"
type = "video"
total = 1000000000.0
EOF
"$BIN" sim --listen 127.0.0.1:0 --config "$T/sim.toml" >"$T/sim.out" 2>"$T/sim.err" &
SIM_PID=$!
PIDS+=("$SIM_PID")
SIM=$(wait_line "$T/sim.out" 20) || die "the simulator did not start: $(cat "$T/sim.err")"

# --- the gateways ------------------------------------------------------------------------
declare -A ADDR TOKEN PROXY_PIDS
ADDR[direct]=$SIM
start_gateway() { # name durability parent-directory-of-the-ledger [inline-appends]
  local dir="$3/ledger-$1" actor ak sk addr pid
  actor=$("$BIN" --dir "$dir" actors add bench-app --format json)
  ak=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["access_key"])' <<<"$actor")
  sk=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["secret_key"])' <<<"$actor")
  KLING_ACCESS_KEY=$ORG_AK KLING_SECRET_KEY=$ORG_SK KLING_AUDIT_AUDIT_DURABILITY=$2 \
    KLING_AUDIT_AUDIT_INLINE_APPENDS=${4:-true} "$BIN" --dir "$dir" gateway --listen 127.0.0.1:0 --upstream "http://$SIM" \
    >"$T/$1.out" 2>"$T/$1.err" &
  pid=$!
  PIDS+=("$pid")
  addr=$(wait_line "$T/$1.out" 20) || die "$1 did not start: $(cat "$T/$1.err")"
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/readyz")" = 200 ] && break
    sleep 0.1
  done
  ADDR[$1]=$addr
  TOKEN[$1]=$(jwt "$ak" "$sk")
  PROXY_PIDS[$1]=$pid
}
# The measured gateway: durability "sync" (the default), the target of the spec.
start_gateway gateway sync "$T"
# Diagnostics only, never candidates for the targets (see the header).
if [[ " $TARGETS " == *" gateway-tmpfs "* ]]; then
  [ "$(df --output=fstype "${TMPFS_DIR:-/dev/shm}" 2>/dev/null | tail -n1)" = tmpfs ] \
    || die "gateway-tmpfs needs a tmpfs at ${TMPFS_DIR:-/dev/shm} (set TMPFS_DIR or TARGETS)"
  SHM=$(mktemp -d "${TMPFS_DIR:-/dev/shm}/kling-gw-bench.XXXXXX")
  start_gateway gateway-tmpfs sync "$SHM"
fi
if [[ " $TARGETS " == *" gateway-buffered "* ]]; then
  start_gateway gateway-buffered buffered "$T"
fi
if [[ " $TARGETS " == *" gateway-queued "* ]]; then
  start_gateway gateway-queued sync "$T" false
fi

# The floor proxies pass the caller's token on to the simulator, as nginx does.
start_floor() { # name [ledger-directory]
  local addr
  "$FLOOR" --upstream "$SIM" ${2:+--ledger "$2"} >"$T/$1.out" 2>"$T/$1.err" &
  PIDS+=("$!")
  PROXY_PIDS[$1]=$!
  addr=$(wait_line "$T/$1.out" 20) || die "$1 did not start: $(cat "$T/$1.err")"
  ADDR[$1]=$addr
}
[[ " $TARGETS " != *" floor "* ]] || start_floor floor
[[ " $TARGETS " != *" floor-ledger "* ]] || start_floor floor-ledger "$T/ledger-floor"

# --- nginx --------------------------------------------------------------------------------
NGX_PORT=$(free_port)
mkdir -p "$T/nginx/tmp"
USER_LINE=""
# A master started as root would switch its workers to "nobody"; keep them as this user.
[ "$(id -u)" -eq 0 ] && USER_LINE="user $(id -un) $(id -gn);"
cat >"$T/nginx/nginx.conf" <<EOF
$USER_LINE
worker_processes auto;
pid $T/nginx/nginx.pid;
error_log $T/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $T/nginx/tmp/body;
  proxy_temp_path $T/nginx/tmp/proxy;
  fastcgi_temp_path $T/nginx/tmp/fastcgi;
  uwsgi_temp_path $T/nginx/tmp/uwsgi;
  scgi_temp_path $T/nginx/tmp/scgi;
  upstream kling_sim {
    server $SIM;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$NGX_PORT;
    location / {
      proxy_pass http://kling_sim;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
"$NGINX" -p "$T/nginx" -e "$T/nginx/error.log" -c "$T/nginx/nginx.conf" -g 'daemon off;' \
  >"$T/nginx/stdout" 2>&1 &
NGX_PID=$!
PIDS+=("$NGX_PID")
ADDR[nginx]="127.0.0.1:$NGX_PORT"
wait_http "http://${ADDR[nginx]}/" 20 \
  || die "nginx did not start: $(cat "$T/nginx/error.log" "$T/nginx/stdout")"
# The master and its workers (children of the process started above).
PROXY_PIDS[nginx]="$NGX_PID $(ps -o pid= --ppid "$NGX_PID" | tr '\n' ' ')"
PROXY_PIDS[direct]=""

# --- the load -----------------------------------------------------------------------------
SIM_TOKEN=$(jwt "$ORG_AK" "$ORG_SK")
TOKEN[direct]=$SIM_TOKEN
TOKEN[nginx]=$SIM_TOKEN
TOKEN[floor]=$SIM_TOKEN
TOKEN[floor-ledger]=$SIM_TOKEN
GET_PATH="/account/costs?start_time=0&end_time=1"
POST_PATH="/v1/videos/text2video"
POST_BODY='{"model_name":"kling-v1","prompt":"a lighthouse at dusk, slow dolly shot","duration":"5","mode":"std"}'
if [ -n "$SERVE" ]; then
  {
    for t in $(printf '%s\n' direct nginx $TARGETS | awk '!seen[$0]++'); do
      [ -n "${ADDR[$t]:-}" ] || continue
      v=${t//-/_}
      printf 'ADDR_%s=%q\nTOKEN_%s=%q\nPIDS_%s=%q\n' "$v" "${ADDR[$t]}" "$v" "${TOKEN[$t]}" \
        "$v" "${PROXY_PIDS[$t]:-}"
    done
    printf 'SIM_PID=%q\nGET_PATH=%q\nPOST_PATH=%q\nPOST_BODY=%q\n' "$SIM_PID" "$GET_PATH" \
      "$POST_PATH" "$POST_BODY"
  } >"$SERVE"
  say "targets up; their variables are in $SERVE; interrupt to stop them"
  wait "$SIM_PID"
  exit 0
fi
RESULTS="$T/results.jsonl"
: >"$RESULTS"
TICK=$(getconf CLK_TCK)

cpu_ticks() { # pids...: user+system clock ticks of every thread of these processes
  local total=0 pid f
  for pid in "$@"; do
    # Fields after the command name, which is in parentheses: utime is the 12th, stime 13th.
    f=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
    total=$((total + $(echo "$f" | awk '{print $12 + $13}')))
  done
  echo "$total"
}

fsync_probe() { # label: fdatasync latency of 700-byte appends in the benchmark's directory
  # Back to back, and one a millisecond as at the fixed rate: on a virtual disk a sync that
  # follows an idle spell can take several times as long as one of a busy stream.
  python3 - "$T/fsync-probe" "$1" <<'EOF'
import json, os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
def probe(pause):
    ts = []
    for _ in range(300):
        if pause:
            time.sleep(pause)
        os.write(fd, b"x" * 699 + b"\n")
        t = time.perf_counter(); os.fdatasync(fd); ts.append(time.perf_counter() - t)
    return sorted(ts)
ts = probe(0)
paced = probe(0.001)
os.close(fd); os.unlink(sys.argv[1])
with open("/proc/loadavg") as f:
    load = float(f.read().split()[0])
psi = None
try:
    with open("/proc/pressure/cpu") as f:
        psi = float(f.readline().split()[1].split("=")[1])
except OSError:
    pass
print(json.dumps({"label": "probe/" + sys.argv[2], "fdatasync_p50_us": round(ts[150] * 1e6),
                  "fdatasync_p99_us": round(ts[296] * 1e6),
                  "fdatasync_paced_p50_us": round(paced[150] * 1e6),
                  "fdatasync_paced_p99_us": round(paced[296] * 1e6), "loadavg_1m": load,
                  "cpu_pressure_some_avg10": psi}))
EOF
}

check() { # target workload: one request must answer HTTP 200 with Kling code 0
  local url="http://${ADDR[$1]}" out
  if [ "$2" = get ]; then
    out=$(curl -s --max-time 5 -H "Authorization: Bearer ${TOKEN[$1]}" "$url$GET_PATH")
  else
    out=$(curl -s --max-time 5 -H "Authorization: Bearer ${TOKEN[$1]}" \
      -H 'Content-Type: application/json' -d "$POST_BODY" "$url$POST_PATH")
  fi
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if d.get("code")==0 else 1)' \
    "$out" || die "$1 $2: unexpected answer: ${out:0:300}"
}

fixed_rate() { # target workload: the generator's JSON line, with CPU per request added
  local url="http://${ADDR[$1]}" args=() p0 s0 p1 s1 line
  if [ "$2" = get ]; then
    args=(--url "$url$GET_PATH")
  else
    args=(--url "$url$POST_PATH" --method POST --header 'content-type: application/json'
      --body "$POST_BODY")
  fi
  # shellcheck disable=SC2086 # PROXY_PIDS holds a list
  p0=$(cpu_ticks ${PROXY_PIDS[$1]}); s0=$(cpu_ticks "$SIM_PID")
  line=$(timeout $((WARMUP + DURATION + 60)) "$LOADGEN" "${args[@]}" \
    --header "authorization: Bearer ${TOKEN[$1]}" \
    --rate "$RATE" --duration-secs "$DURATION" --warmup-secs "$WARMUP" --label "$1/$2/fixed")
  # shellcheck disable=SC2086
  p1=$(cpu_ticks ${PROXY_PIDS[$1]}); s1=$(cpu_ticks "$SIM_PID")
  python3 -c '
import json, sys
d = json.loads(sys.argv[1])
tick, p, s = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
n = d["received"]
d["proxy_cpu_us_per_req"] = round(p / tick * 1e6 / n, 1) if n else None
d["sim_cpu_us_per_req"] = round(s / tick * 1e6 / n, 1) if n else None
print(json.dumps(d))
' "$line" "$TICK" $((p1 - p0)) $((s1 - s0))
}

max_rate() { # target workload connections: wrk, summarised as a JSON line with CPU per request
  local url="http://${ADDR[$1]}" out p0 s0 p1 s1
  local args=(-t "$WRK_THREADS" -c "$3" -d "${WRK_SECS}s" --timeout 10s
    -H "Authorization: Bearer ${TOKEN[$1]}")
  # shellcheck disable=SC2086 # PROXY_PIDS holds a list
  p0=$(cpu_ticks ${PROXY_PIDS[$1]}); s0=$(cpu_ticks "$SIM_PID")
  if [ "$2" = get ]; then
    out=$(timeout $((WRK_SECS + 60)) wrk "${args[@]}" "$url$GET_PATH")
  else
    out=$(WRK_BODY=$POST_BODY timeout $((WRK_SECS + 60)) wrk "${args[@]}" \
      -s "$ROOT/bench/wrk-post.lua" "$url$POST_PATH")
  fi
  # shellcheck disable=SC2086
  p1=$(cpu_ticks ${PROXY_PIDS[$1]}); s1=$(cpu_ticks "$SIM_PID")
  printf '%s\n' "$out" | python3 -c '
import json, re, sys
text = sys.stdin.read()
def num(pattern):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else 0.0
n = num(r"(\d+) requests in")
tick, p, s = float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
print(json.dumps({"label": sys.argv[1], "rps": num(r"Requests/sec:\s+([\d.]+)"), "requests": n,
                  "non_2xx": num(r"Non-2xx or 3xx responses: (\d+)"),
                  "socket_errors": "Socket errors" in text, "connections": int(sys.argv[2]),
                  "threads": int(sys.argv[3]), "seconds": float(sys.argv[4]),
                  "proxy_cpu_us_per_req": round(p / tick * 1e6 / n, 1) if n else None,
                  "sim_cpu_us_per_req": round(s / tick * 1e6 / n, 1) if n else None}))
' "$1/$2/max/c$3" "$3" "$WRK_THREADS" "$WRK_SECS" "$TICK" $((p1 - p0)) $((s1 - s0))
}

for w in $WORKLOADS; do
  for t in $TARGETS; do
    check "$t" "$w"
  done
done
say "sim ${ADDR[direct]}, nginx ${ADDR[nginx]}, gateway ${ADDR[gateway]} (durability sync)"
fsync_probe before | tee -a "$RESULTS" >&2
for w in $WORKLOADS; do
  for t in $TARGETS; do
    say "$t $w: ${RATE} req/s for ${DURATION}s (+${WARMUP}s warm-up)"
    fixed_rate "$t" "$w" | tee -a "$RESULTS" >&2
  done
  for c in $WRK_CONNS; do
    for t in $TARGETS; do
      say "$t $w: maximum throughput, wrk -t$WRK_THREADS -c$c -d${WRK_SECS}s"
      max_rate "$t" "$w" "$c" | tee -a "$RESULTS" >&2
    done
  done
done
fsync_probe after | tee -a "$RESULTS" >&2
for t in $TARGETS; do
  [ -n "${PROXY_PIDS[$t]}" ] || continue
  # shellcheck disable=SC2086
  for pid in ${PROXY_PIDS[$t]}; do
    kill -0 "$pid" 2>/dev/null || die "$t (pid $pid) died during the run"
  done
done

# --- summary ------------------------------------------------------------------------------
FS=$(df -T "$T" | awk 'NR==2 {print $2}')
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
python3 - "$RESULTS" "$(nproc)" "$CPU" "$FS" "$RATE" "$TARGETS" "$WRK_CONNS" <<'EOF' \
  | tee "$T/summary.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {r["label"]: r for r in rows}
targets, conns = sys.argv[6].split(), [int(c) for c in sys.argv[7].split()]
print(f"machine: {sys.argv[2]} cores, {sys.argv[3]}; ledger on {sys.argv[4]}; "
      f"fixed rate {sys.argv[5]} req/s")
for when in ("before", "after"):
    p = by.get(f"probe/{when}")
    if p:
        paced = ""
        if "fdatasync_paced_p50_us" in p:
            paced = (f"; one a millisecond: p50 {p['fdatasync_paced_p50_us'] / 1000:.3f} ms, "
                     f"p99 {p['fdatasync_paced_p99_us'] / 1000:.3f} ms")
        print(f"{when}: fdatasync p50 {p['fdatasync_p50_us'] / 1000:.3f} ms, "
              f"p99 {p['fdatasync_p99_us'] / 1000:.3f} ms{paced}; load average "
              f"{p['loadavg_1m']}, CPU pressure {p['cpu_pressure_some_avg10']}%")
for w in ("get", "post"):
    if f"direct/{w}/fixed" not in by:
        continue
    name = {"get": "GET /account/costs", "post": "POST /v1/videos/text2video"}[w]
    print(f"\n{name}: latency in ms at the fixed rate (+ = minus direct); CPU in us per request "
          f"at the fixed rate and at the best wrk run; maximum req/s by wrk connections")
    head = f"{'target':<17}{'p50':>7}{'p99':>8}{'+p50':>8}{'+p99':>8}{'non-2xx':>8}"
    head += f"{'cpu':>6}{'cpu@max':>8}" + "".join(f"{'c=' + str(c):>9}" for c in conns)
    print(head + f"{'max':>9}")
    d = by[f"direct/{w}/fixed"]
    best = {}
    for t in targets:
        f = by[f"{t}/{w}/fixed"]
        runs = [by.get(f"{t}/{w}/max/c{c}", {}) for c in conns]
        rps = [r.get("rps", 0.0) for r in runs]
        top = max(runs, key=lambda r: r.get("rps", 0.0))
        bad = f["measured"] - f["ok_2xx"] + f["errors"] + sum(r.get("non_2xx", 0) for r in runs)
        best[t] = max(rps)
        add50 = (f["p50_us"] - d["p50_us"]) / 1000 if t != "direct" else 0.0
        add99 = (f["p99_us"] - d["p99_us"]) / 1000 if t != "direct" else 0.0
        key = "sim_cpu_us_per_req" if t == "direct" else "proxy_cpu_us_per_req"
        line = f"{t:<17}{f['p50_us'] / 1000:>7.3f}{f['p99_us'] / 1000:>8.3f}{add50:>8.3f}"
        line += f"{add99:>8.3f}{bad:>8.0f}{f.get(key) or 0:>6.0f}{top.get(key) or 0:>8.0f}"
        print(line + "".join(f"{r:>9.0f}" for r in rps) + f"{best[t]:>9.0f}")
    nginx = {c: by.get(f"nginx/{w}/max/c{c}", {}).get("rps", 0.0) for c in conns}
    if best.get("nginx"):
        for t in targets:
            if t in ("direct", "nginx"):
                continue
            per = ", ".join(
                f"c={c} {by.get(f'{t}/{w}/max/c{c}', {}).get('rps', 0.0) / nginx[c]:.2f}"
                for c in conns
                if nginx[c]
            )
            print(f"throughput {t}/nginx: best {best[t] / best['nginx']:.2f} ({per})")
print("\n(cpu for direct is the simulator's; for the others the proxy's own, sim excluded)")
EOF
if [ -n "$OUT" ]; then
  cat "$RESULTS" >>"$OUT"
  say "results appended to $OUT"
fi
