#!/usr/bin/env bash
# Herald vs redis-server on loopback, through one load generator (`herald bench`) with
# the same connections, pipeline depth and payload size, each side writing a log at the
# same fsync level:
#   never:  herald --fsync never   vs  redis appendonly yes, appendfsync no
#   always: herald --fsync always  vs  redis appendonly yes, appendfsync always
# At pipeline 1 and PIPELINES (16), each pair runs on fresh servers:
#   enqueue             vs LPUSH  (and XADD)
#   send (keyed log)    vs XADD
#   dequeue+ack         vs RPOP   (and XREADGROUP+XACK, the same at-least-once contract)
# Herald's queue depth limit is raised to DEPTH so that both sides hold the whole
# backlog. Prints ops/s, p50/p99 in µs and the herald/redis ratio of each cell.
#
# Then, unless KAFKA=0, the Kafka listener's produce and consume rates at the same
# payload size (benches/kafka.sh, which compares them with JSON-lines publish/fetch;
# redis has no counterpart).
#
# Settings: CONNECTIONS (50) PIPELINES ("1 16") SIZE (64) SECS (5) DEPTH (100000000)
# KAFKA (1).
# Installs redis-server with apt-get when it is missing and we are root; fails
# otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-50} PIPELINES=${PIPELINES:-"1 16"} SIZE=${SIZE:-64}
SECS=${SECS:-5} DEPTH=${DEPTH:-100000000}

if ! command -v redis-server >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing redis-server ..." >&2
  (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null 2>&1 || true
fi
command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }

# shellcheck source=common.sh
source benches/common.sh

bench() { # target port pipeline -> "produce_ops p50 p99 consume_ops p50 p99"
  "$herald" --addr "127.0.0.1:$2" bench --target "$1" --connections "$CONNECTIONS" \
    --pipeline "$3" --size "$SIZE" --seconds "$SECS" --max-depth "$DEPTH" 2>/dev/null |
    awk '$1=="produce"{p=$3" "$4" "$5} $1=="consume"{c=$3" "$4" "$5}
         END{if(c=="")c="- - -"; print p" "c}'
}

row() { # label ops p50 p99 redis_ops redis_p50 redis_p99
  awk -v l="$1" -v h="$2" -v h5="$3" -v h9="$4" -v r="$5" -v r5="$6" -v r9="$7" 'BEGIN{
    printf "%-34s %10.0f %7s %7s | %10.0f %7s %7s | %5.2f\n", l, h, h5, h9, r, r5, r9, h/r }'
}

cell() { # level herald_fsync pipeline redis_args...
  local level=$1 fsync=$2 pipeline=$3; shift 3
  local hp rp dir="$work/$level-$pipeline"
  hp=$(free_port)
  "$herald" --addr "127.0.0.1:$hp" serve --kafka-addr none --data-dir "$dir/herald" \
    --fsync "$fsync" --queue-max-depth "$DEPTH" --log-level warn 2>/dev/null &
  local herald_pid=$!
  pids+=("$herald_pid")
  rp=$(free_port)
  mkdir -p "$dir/redis"
  redis-server --port "$rp" --bind 127.0.0.1 --dir "$dir/redis" --save "" \
    --daemonize no "$@" >/dev/null &
  local redis_pid=$!
  pids+=("$redis_pid")
  wait_port "$hp"
  wait_port "$rp"
  local q l s g
  read -r -a q <<<"$(bench herald "$hp" "$pipeline")"
  read -r -a g <<<"$(bench herald-log "$hp" "$pipeline")"
  read -r -a l <<<"$(bench redis-list "$rp" "$pipeline")"
  read -r -a s <<<"$(bench redis-stream "$rp" "$pipeline")"
  kill "$herald_pid" "$redis_pid" 2>/dev/null || true
  wait "$herald_pid" "$redis_pid" 2>/dev/null || true
  printf '\n%s, pipeline %s (herald --fsync %s; redis %s)\n' "$level" "$pipeline" "$fsync" "$*"
  printf '%-34s %10s %7s %7s | %10s %7s %7s | %5s\n' \
    "herald / redis" "herald/s" "p50 µs" "p99 µs" "redis/s" "p50 µs" "p99 µs" "ratio"
  row "enqueue / LPUSH" "${q[0]}" "${q[1]}" "${q[2]}" "${l[0]}" "${l[1]}" "${l[2]}"
  row "enqueue / XADD" "${q[0]}" "${q[1]}" "${q[2]}" "${s[0]}" "${s[1]}" "${s[2]}"
  row "send / XADD" "${g[0]}" "${g[1]}" "${g[2]}" "${s[0]}" "${s[1]}" "${s[2]}"
  row "dequeue+ack / RPOP" "${q[3]}" "${q[4]}" "${q[5]}" "${l[3]}" "${l[4]}" "${l[5]}"
  row "dequeue+ack / XREADGROUP+XACK" "${q[3]}" "${q[4]}" "${q[5]}" "${s[3]}" "${s[4]}" "${s[5]}"
}

echo "connections=$CONNECTIONS pipelines=$PIPELINES size=${SIZE}B seconds=$SECS per phase, depth limit $DEPTH"
for pipeline in $PIPELINES; do
  cell never never "$pipeline" --appendonly yes --appendfsync no
  cell always always "$pipeline" --appendonly yes --appendfsync always
done
if [ "${KAFKA:-1}" != 0 ]; then
  printf '\nKafka listener (benches/kafka.sh, %s-byte messages)\n' "$SIZE"
  SIZE=$SIZE bash benches/kafka.sh
fi
