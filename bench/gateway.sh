#!/usr/bin/env bash
# Gateway overhead benchmark (results in docs/performance.md, "Gateway overhead").
#
# Runs the same load against three targets on this machine, all in front of one Kling API
# simulator on 127.0.0.1:
#   direct   the simulator itself
#   nginx    nginx (the Debian package) as a plain keepalive reverse proxy
#   gateway  kling-audit gateway, default durability "sync": every request record is
#            fdatasync'ed before forwarding and every response record before answering
# Two workloads: GET /account/costs (cheap, full audited path) and POST /v1/videos/text2video
# (a create: the sim's concurrency and units are raised so they answer 200).
# For each: p50/p99 at a fixed rate with an open-loop generator (crates/gateway/examples/
# loadgen.rs, latency from the scheduled send time), then maximum throughput with wrk.
#
# usage: bench/gateway.sh [--out FILE.jsonl]
# environment (defaults): RATE=1000 DURATION=10 WARMUP=2 WRK_SECS=10 WRK_CONNS=16
#   WRK_THREADS=1 BENCH_TMPDIR=${TMPDIR:-/tmp} KEEP_TMP=0 SKIP_BUILD=0 WORKLOADS="get post"
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
WRK_CONNS=${WRK_CONNS:-16}
WRK_THREADS=${WRK_THREADS:-1}
WORKLOADS=${WORKLOADS:-get post}
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
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
    && cargo build --release --locked -q -p kling-audit-gateway --example loadgen)
fi
BIN="$ROOT/target/release/kling-audit"
LOADGEN="$ROOT/target/release/examples/loadgen"
[ -x "$BIN" ] && [ -x "$LOADGEN" ] || die "binaries missing; run without SKIP_BUILD=1"

# --- processes and cleanup ----------------------------------------------------------------
T=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/kling-gw-bench.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    # The gateway seals its ledger on SIGTERM; give it a moment, then insist.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "${KEEP_TMP:-0}" = 1 ]; then say "kept $T"; else rm -rf "$T"; fi
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

# Enough slots and units that every create of the benchmark is admitted (200, not 429).
[concurrency]
video = 1000000
image = 1000000

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
PIDS+=($!)
SIM=$(wait_line "$T/sim.out" 20) || die "the simulator did not start: $(cat "$T/sim.err")"

# --- the gateway --------------------------------------------------------------------------
ACTOR=$("$BIN" --dir "$T/ledger" actors add bench-app --format json)
ACTOR_AK=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["access_key"])' <<<"$ACTOR")
ACTOR_SK=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["secret_key"])' <<<"$ACTOR")
KLING_ACCESS_KEY=$ORG_AK KLING_SECRET_KEY=$ORG_SK KLING_AUDIT_AUDIT_DURABILITY=sync \
  "$BIN" --dir "$T/ledger" gateway --listen 127.0.0.1:0 --upstream "http://$SIM" \
  >"$T/gw.out" 2>"$T/gw.err" &
PIDS+=($!)
GW_PID=$!
GW=$(wait_line "$T/gw.out" 20) || die "the gateway did not start: $(cat "$T/gw.err")"
for _ in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$GW/readyz")" = 200 ] && break
  sleep 0.1
done

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
PIDS+=($!)
NGX="127.0.0.1:$NGX_PORT"
wait_http "http://$NGX/" 20 || die "nginx did not start: $(cat "$T/nginx/error.log" "$T/nginx/stdout")"

# --- the load -----------------------------------------------------------------------------
SIM_TOKEN=$(jwt "$ORG_AK" "$ORG_SK")
GW_TOKEN=$(jwt "$ACTOR_AK" "$ACTOR_SK")
GET_PATH="/account/costs?start_time=0&end_time=1"
POST_PATH="/v1/videos/text2video"
POST_BODY='{"model_name":"kling-v1","prompt":"a lighthouse at dusk, slow dolly shot","duration":"5","mode":"std"}'
RESULTS="$T/results.jsonl"
: >"$RESULTS"

target_addr() { case "$1" in direct) echo "$SIM" ;; nginx) echo "$NGX" ;; gateway) echo "$GW" ;; esac; }
target_token() { if [ "$1" = gateway ]; then echo "$GW_TOKEN"; else echo "$SIM_TOKEN"; fi; }

check() { # target workload: one request must answer HTTP 200 with Kling code 0
  local url="http://$(target_addr "$1")" out
  if [ "$2" = get ]; then
    out=$(curl -s --max-time 5 -H "Authorization: Bearer $(target_token "$1")" "$url$GET_PATH")
  else
    out=$(curl -s --max-time 5 -H "Authorization: Bearer $(target_token "$1")" \
      -H 'Content-Type: application/json' -d "$POST_BODY" "$url$POST_PATH")
  fi
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if d.get("code")==0 else 1)' \
    "$out" || die "$1 $2: unexpected answer: ${out:0:300}"
}

fixed_rate() { # target workload
  local url="http://$(target_addr "$1")" args=()
  if [ "$2" = get ]; then
    args=(--url "$url$GET_PATH")
  else
    args=(--url "$url$POST_PATH" --method POST --header 'content-type: application/json'
      --body "$POST_BODY")
  fi
  timeout $((WARMUP + DURATION + 60)) "$LOADGEN" "${args[@]}" \
    --header "authorization: Bearer $(target_token "$1")" \
    --rate "$RATE" --duration-secs "$DURATION" --warmup-secs "$WARMUP" \
    --label "$1/$2/fixed"
}

max_rate() { # target workload: wrk's text output, then a JSON line
  local url="http://$(target_addr "$1")" out
  local args=(-t "$WRK_THREADS" -c "$WRK_CONNS" -d "${WRK_SECS}s" --timeout 10s
    -H "Authorization: Bearer $(target_token "$1")")
  if [ "$2" = get ]; then
    out=$(timeout $((WRK_SECS + 60)) wrk "${args[@]}" "$url$GET_PATH")
  else
    out=$(WRK_BODY=$POST_BODY timeout $((WRK_SECS + 60)) wrk "${args[@]}" \
      -s "$ROOT/bench/wrk-post.lua" "$url$POST_PATH")
  fi
  printf '%s\n' "$out" | python3 -c '
import json, re, sys
text = sys.stdin.read()
def num(pattern):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else 0.0
print(json.dumps({"label": sys.argv[1], "rps": num(r"Requests/sec:\s+([\d.]+)"),
                  "requests": num(r"(\d+) requests in"),
                  "non_2xx": num(r"Non-2xx or 3xx responses: (\d+)"),
                  "socket_errors": "Socket errors" in text, "connections": int(sys.argv[2]),
                  "threads": int(sys.argv[3]), "seconds": float(sys.argv[4])}))
' "$1/$2/max" "$WRK_CONNS" "$WRK_THREADS" "$WRK_SECS"
}

for w in $WORKLOADS; do
  for t in direct nginx gateway; do
    check "$t" "$w"
  done
done
say "sim $SIM, nginx $NGX, gateway $GW (ledger in $T/ledger, durability sync)"
for w in $WORKLOADS; do
  for t in direct nginx gateway; do
    say "$t $w: ${RATE} req/s for ${DURATION}s (+${WARMUP}s warm-up)"
    fixed_rate "$t" "$w" | tee -a "$RESULTS" >&2
  done
  for t in direct nginx gateway; do
    say "$t $w: maximum throughput, wrk -t$WRK_THREADS -c$WRK_CONNS -d${WRK_SECS}s"
    max_rate "$t" "$w" | tee -a "$RESULTS" >&2
  done
done
kill -0 "$GW_PID" 2>/dev/null || die "the gateway died during the run: $(tail -5 "$T/gw.err")"
METRICS=$(curl -s --max-time 5 "http://$GW/metrics" || true)

# --- summary ------------------------------------------------------------------------------
FS=$(df -T "$T" | awk 'NR==2 {print $2}')
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
python3 - "$RESULTS" "$(nproc)" "$CPU" "$FS" "$RATE" <<'EOF' | tee "$T/summary.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {r["label"]: r for r in rows}
print(f"machine: {sys.argv[2]} cores, {sys.argv[3]}; ledger on {sys.argv[4]}; "
      f"fixed rate {sys.argv[5]} req/s")
for w in ("get", "post"):
    if f"direct/{w}/fixed" not in by:
        continue
    name = {"get": "GET /account/costs", "post": "POST /v1/videos/text2video"}[w]
    print(f"\n{name}")
    print(f"{'target':<8} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} {'+p99 ms':>8} "
          f"{'2xx':>6} {'other':>6} {'max req/s':>10} {'non-2xx':>8}")
    d = by[f"direct/{w}/fixed"]
    for t in ("direct", "nginx", "gateway"):
        f, m = by[f"{t}/{w}/fixed"], by.get(f"{t}/{w}/max", {})
        add50 = (f["p50_us"] - d["p50_us"]) / 1000
        add99 = (f["p99_us"] - d["p99_us"]) / 1000
        other = f["measured"] - f["ok_2xx"]
        print(f"{t:<8} {f['p50_us']/1000:>8.3f} {f['p99_us']/1000:>8.3f} "
              f"{add50 if t != 'direct' else 0:>8.3f} {add99 if t != 'direct' else 0:>8.3f} "
              f"{f['ok_2xx']:>6} {other:>6} {m.get('rps', 0):>10.0f} {m.get('non_2xx', 0):>8.0f}")
    g, n = by.get(f"gateway/{w}/max"), by.get(f"nginx/{w}/max")
    if g and n and n["rps"]:
        print(f"throughput gateway/nginx: {g['rps'] / n['rps']:.2f}")
EOF
if [ -n "$METRICS" ]; then
  # The gateway's own account of its overhead (upstream wait excluded) and of ledger appends.
  printf '%s\n' "$METRICS" | python3 -c '
import sys
v = {}
for line in sys.stdin:
    p = line.split()
    if len(p) == 2 and p[0].split("{")[0].endswith(("_sum", "_count")):
        v[p[0]] = float(p[1])
for h in ("kling_gateway_overhead_seconds", "kling_gateway_ledger_append_seconds"):
    s, c = v.get(h + "_sum"), v.get(h + "_count")
    if s is not None and c:
        print(f"gateway metric {h}: mean {s / c * 1000:.3f} ms over {c:.0f}")
' | tee -a "$T/summary.txt"
fi
if [ -n "$OUT" ]; then
  cat "$RESULTS" >>"$OUT"
  say "results appended to $OUT"
fi
