#!/usr/bin/env bash
# What replication costs: `herald bench` (enqueue; dequeue+ack) against one node, then
# against a 3-node Raft cluster on loopback, through its leader and through a follower
# (which forwards every request to the leader). Same load generator, connections,
# pipeline depth and payload size; prints ops/s, p99, how many requests got error 0
# (outcome unknown: the leader changed) and the ratio to one node.
#
# Settings: CONNECTIONS (50) PIPELINE (16) SIZE (64) SECS (5) FSYNC (always), the load
# of benches/compare-redis.sh.
# Note: the three nodes share this machine's cores and disk, which a real cluster
# would not; the ratio is a floor.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-50} PIPELINE=${PIPELINE:-16} SIZE=${SIZE:-64} SECS=${SECS:-5}
FSYNC=${FSYNC:-always}

# shellcheck source=common.sh
source benches/common.sh

bench() { # port -> "produce_ops_s produce_p99 produce_unknown consume_ops_s consume_p99 consume_unknown"
  "$herald" --addr "127.0.0.1:$1" bench --connections "$CONNECTIONS" \
    --pipeline "$PIPELINE" --size "$SIZE" --seconds "$SECS" 2>/dev/null |
    awk '$1=="produce"{p=$3" "$5" "$7} $1=="consume"{c=$3" "$5" "$7} END{print p" "c}'
}

row() { printf '%-26s %12s %10s %8s %14s %10s %8s\n' "$@"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }

port=$(free_port)
"$herald" --addr "127.0.0.1:$port" serve --kafka-addr none --data-dir "$work/single" --fsync "$FSYNC" --log-level warn 2>/dev/null &
pids+=($!)
wait_port "$port"
read -r s_p s_p99 s_pu s_c s_c99 s_cu <<<"$(bench "$port")"

ports=("$(free_port)" "$(free_port)" "$(free_port)")
peers="n1=127.0.0.1:${ports[0]},n2=127.0.0.1:${ports[1]},n3=127.0.0.1:${ports[2]}"
for i in 1 2 3; do
  "$herald" --addr "127.0.0.1:${ports[$((i-1))]}" serve --kafka-addr none --data-dir "$work/n$i" --fsync "$FSYNC" \
    --log-level warn --node-id "n$i" --peers "$peers" 2>/dev/null &
  pids+=($!)
done
for p in "${ports[@]}"; do wait_port "$p"; done
leader=""
for _ in $(seq 100); do
  leader=$("$herald" --addr "127.0.0.1:${ports[0]}" status 2>/dev/null | awk '{print $4}') || true
  [ -n "$leader" ] && [ "$leader" != "-" ] && break
  sleep 0.1
done
[ -n "$leader" ] && [ "$leader" != "-" ] || { echo "no leader elected" >&2; exit 1; }
li=${leader#n}
fi=$(( li % 3 + 1 ))
read -r l_p l_p99 l_pu l_c l_c99 l_cu <<<"$(bench "${ports[$((li-1))]}")"
read -r f_p f_p99 f_pu f_c f_c99 f_cu <<<"$(bench "${ports[$((fi-1))]}")"

printf '\nreplication cost (--fsync %s, %s connections x %s in flight, %s-byte messages, %ss)\n' \
  "$FSYNC" "$CONNECTIONS" "$PIPELINE" "$SIZE" "$SECS"
row "" "produce/s" "p99 µs" "unknown" "consume+ack/s" "p99 µs" "unknown"
row "one node" "$s_p" "$s_p99" "$s_pu" "$s_c" "$s_c99" "$s_cu"
row "3 nodes, via the leader" "$l_p" "$l_p99" "$l_pu" "$l_c" "$l_c99" "$l_cu"
row "3 nodes, via a follower" "$f_p" "$f_p99" "$f_pu" "$f_c" "$f_c99" "$f_cu"
printf 'ratio to one node: leader %s / %s, follower %s / %s (produce / consume+ack)\n' \
  "$(ratio "$l_p" "$s_p")" "$(ratio "$l_c" "$s_c")" "$(ratio "$f_p" "$s_p")" "$(ratio "$f_c" "$s_c")"
