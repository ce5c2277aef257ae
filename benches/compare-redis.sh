#!/usr/bin/env bash
# Herald vs redis-server on loopback, through one load generator (`herald bench`)
# with the same connections, pipeline depth and payload size. Two durability levels:
#   durable:   herald --fsync always   vs  redis appendonly yes, appendfsync always
#   in-memory: herald --fsync never    vs  redis without persistence
# Each runs herald (enqueue; dequeue+ack), redis lists (LPUSH; RPOP) and redis
# streams (XADD; XREADGROUP+XACK), and prints ops/s, p99 and the herald/redis ratio.
#
# Settings: CONNECTIONS (4) PIPELINE (16) SIZE (100) SECS (5). Installs redis-server
# with apt-get when it is missing and we are root; otherwise skips with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-4} PIPELINE=${PIPELINE:-16} SIZE=${SIZE:-100} SECS=${SECS:-5}

if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing redis-server ..." >&2
    (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null 2>&1 || true
  fi
fi
if ! command -v redis-server >/dev/null; then
  echo "SKIP: redis-server is not installed and could not be installed here" >&2
  exit 0
fi

# shellcheck source=common.sh
source benches/common.sh

bench() { # target port -> "produce_ops_s produce_p99 consume_ops_s consume_p99"
  "$herald" --addr "127.0.0.1:$2" bench --target "$1" --connections "$CONNECTIONS" \
    --pipeline "$PIPELINE" --size "$SIZE" --seconds "$SECS" 2>/dev/null |
    awk '$1=="produce"{p=$3" "$5} $1=="consume"{c=$3" "$5} END{print p" "c}'
}

run_level() { # level herald_fsync redis_args...
  local level=$1 fsync=$2; shift 2
  local hp rp
  hp=$(free_port)
  "$herald" --addr "127.0.0.1:$hp" serve --kafka-addr none --data-dir "$work/herald-$level" --fsync "$fsync" --log-level warn 2>/dev/null &
  pids+=($!)
  rp=$(free_port)
  redis-server --port "$rp" --bind 127.0.0.1 --dir "$work" --dbfilename "dump-$level.rdb" \
    --appendfilename "aof-$level" --daemonize no "$@" >/dev/null &
  pids+=($!)
  wait_port "$hp"; wait_port "$rp"
  read -r h_p h_p99 h_c h_c99 <<<"$(bench herald "$hp")"
  read -r l_p l_p99 l_c l_c99 <<<"$(bench redis-list "$rp")"
  read -r s_p s_p99 s_c s_c99 <<<"$(bench redis-stream "$rp")"
  printf '\n%s (herald --fsync %s; redis %s)\n' "$level" "$fsync" "$*"
  printf '%-22s %12s %10s %14s %10s\n' "" "produce/s" "p99 µs" "consume+ack/s" "p99 µs"
  printf '%-22s %12s %10s %14s %10s\n' "herald queue" "$h_p" "$h_p99" "$h_c" "$h_c99"
  printf '%-22s %12s %10s %14s %10s\n' "redis LPUSH/RPOP" "$l_p" "$l_p99" "$l_c" "$l_c99"
  printf '%-22s %12s %10s %14s %10s\n' "redis XADD/XREADGROUP" "$s_p" "$s_p99" "$s_c" "$s_c99"
  awk -v hp="$h_p" -v hc="$h_c" -v lp="$l_p" -v lc="$l_c" -v sp="$s_p" -v sc="$s_c" 'BEGIN{
    printf "ratio herald/redis-list:   produce %.2f  consume %.2f\n", hp/lp, hc/lc;
    printf "ratio herald/redis-stream: produce %.2f  consume %.2f\n", hp/sp, hc/sc }'
}

echo "connections=$CONNECTIONS pipeline=$PIPELINE size=${SIZE}B seconds=$SECS (per phase)"
run_level durable always --appendonly yes --appendfsync always --save ""
run_level in-memory never --appendonly no --save ""
