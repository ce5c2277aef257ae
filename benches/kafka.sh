#!/usr/bin/env bash
# Herald's Kafka listener vs its JSON-lines API, on loopback: COUNT messages of SIZE
# bytes produced to a one-partition topic and then consumed from its beginning, once
# through each, at --fsync always and at --fsync never. Prints messages/s and MB/s
# (10^6 payload bytes) per phase, the server's CPU time (user + sys) in the phase, and
# the ratio Kafka/JSON-lines of messages/s.
#   Kafka:      kcat (librdkafka) -P from a file of COUNT lines, acks=all, linger.ms
#               and batch.num.messages as set below; then kcat -C -e -o beginning
#               (a simple consumer: Fetch requests, no group) into a file, then
#               counted and compared with what was produced. Its fetch.wait.max.ms
#               is FETCH_WAIT_MS: librdkafka reports the end of the partition only
#               after a fetch there comes back empty, which the broker holds that
#               long (librdkafka's default, 500 ms, would be in the time).
#   JSON-lines: benches/kafka_bench.py on one connection: `publish` (one message a
#               request, PIPELINE in flight), then `join` + `fetch` (FETCH_MAX messages
#               a reply, FETCH_DEPTH fetches in flight). This topic path is the one
#               that matches Kafka produce/consume; `herald bench` drives a queue
#               (dequeue + ack per message) for a fixed time, not a fixed count.
# Every run gets a fresh server and data dir, the topic made first with create-topic
# (Kafka auto-creation is off, so a wrong topic name fails rather than makes one).
# Kafka phases are timed around the kcat process (start, metadata and connection
# included); JSON-lines phases inside the helper, from the first request to the last
# reply (building the requests excluded).
# Every message must come back: a short count fails the script.
#
# Settings: COUNT (1000000) SIZE (100) PIPELINE (1000) FETCH_MAX (10000)
# FETCH_DEPTH (2) LINGER_MS (5) BATCH (10000) FETCH_WAIT_MS (10)
# FSYNCS ("always never") PHASE_TIMEOUT (120: a kcat phase that takes longer fails,
# exit status 124; the JSON-lines helper fails after 30 s without a reply).
# Needs kcat (Debian: apt-get install kcat) and python3; fails without them.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-1000000} SIZE=${SIZE:-100} PIPELINE=${PIPELINE:-1000}
FETCH_MAX=${FETCH_MAX:-10000} FETCH_DEPTH=${FETCH_DEPTH:-2}
LINGER_MS=${LINGER_MS:-5} BATCH=${BATCH:-10000} FETCH_WAIT_MS=${FETCH_WAIT_MS:-10}
FSYNCS=${FSYNCS:-always never} PHASE_TIMEOUT=${PHASE_TIMEOUT:-120}

if ! command -v kcat >/dev/null; then
  echo "kcat (librdkafka's command-line client) is not installed: apt-get install kcat" >&2
  exit 1
fi

# shellcheck source=common.sh
source benches/common.sh
# One binary for the whole run, even if target/ is rebuilt meanwhile.
cp "$herald" "$work/herald"
herald=$work/herald

# Room for the run's records: a topic partition keeps max-records-per-log.
records=$(( COUNT > 1000000 ? 2 * COUNT : 2000000 ))
# COUNT lines of SIZE letters (the payload benches/kafka_bench.py publishes).
python3 -c "import sys; sys.stdout.write((''.join(chr(97 + i % 26) for i in range($SIZE)) + '\n') * $COUNT)" >"$work/lines"

now() { date +%s.%N; }
clk=$(getconf CLK_TCK)
cpu() { awk -v clk="$clk" '{printf "%.2f", ($14 + $15) / clk}' "/proc/$server/stat"; } # server user+sys s
die() { echo "FAIL: $*" >&2; exit 1; }

start_server() { # name fsync -> sets hp (JSON-lines port) kp (Kafka port)
  hp=$(free_port) kp=$(free_port)
  "$herald" --addr "127.0.0.1:$hp" serve --kafka-addr "127.0.0.1:$kp" --data-dir "$work/$1" \
    --fsync "$2" --log-level warn --max-records-per-log "$records" \
    --max-log-records "$(( 5 * records ))" --kafka-auto-create-partitions 0 \
    2>"$work/$1.log" &
  server=$!
  pids+=("$server")
  wait_port "$hp"; wait_port "$kp"
  "$herald" --addr "127.0.0.1:$hp" create-topic bench 1 >/dev/null
}

stop_server() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}

kafka_run() { # fsync -> sets k_p k_c (seconds), k_pcpu k_ccpu (server CPU seconds)
  start_server "kafka-$1" "$1"
  local t0 t1 t2 t3 c0 c1 c2 c3 hw lines bytes
  c0=$(cpu) t0=$(now)
  timeout "$PHASE_TIMEOUT" kcat -P -b "127.0.0.1:$kp" -t bench -p 0 -X acks=all -X linger.ms="$LINGER_MS" \
    -X batch.num.messages="$BATCH" <"$work/lines" 2>"$work/kcat-p-$1.err" ||
    die "kcat -P (fsync $1) exited $?: $(head -5 "$work/kcat-p-$1.err")"
  t1=$(now) c1=$(cpu)
  hw=$(timeout 30 kcat -Q -b "127.0.0.1:$kp" -t bench:0:-1 2>&1 | awk '{print $NF}')
  [ "$hw" = "$COUNT" ] ||
    die "after kcat -P (fsync $1) the high watermark is '$hw', not $COUNT; kcat -P said: $(head -5 "$work/kcat-p-$1.err")"
  c2=$(cpu) t2=$(now)
  timeout "$PHASE_TIMEOUT" kcat -C -b "127.0.0.1:$kp" -t bench -p 0 -o beginning -e -q -X fetch.wait.max.ms="$FETCH_WAIT_MS" \
    >"$work/consumed" 2>"$work/kcat-c-$1.err" || die "kcat -C (fsync $1) exited $?: $(head -5 "$work/kcat-c-$1.err")"
  t3=$(now) c3=$(cpu)
  read -r lines bytes _ < <(wc -lc "$work/consumed")
  [ "$lines" = "$COUNT" ] && [ "$bytes" = "$(( COUNT * (SIZE + 1) ))" ] ||
    die "kcat -C (fsync $1) read $lines messages ($bytes bytes), want $COUNT ($(( COUNT * (SIZE + 1) )) bytes); kcat -C said: $(head -5 "$work/kcat-c-$1.err")"
  cmp -s "$work/lines" "$work/consumed" || die "kcat -C (fsync $1): the messages differ from those produced"
  rm -f "$work/consumed"
  stop_server
  k_p=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.6f", b-a}')
  k_c=$(awk -v a="$t2" -v b="$t3" 'BEGIN{printf "%.6f", b-a}')
  k_pcpu=$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.2f", b-a}')
  k_ccpu=$(awk -v a="$c2" -v b="$c3" 'BEGIN{printf "%.2f", b-a}')
}

json_run() { # fsync -> sets j_p j_c (seconds), j_pcpu j_ccpu (server CPU seconds)
  start_server "json-$1" "$1"
  local out n c0 c1 c2
  c0=$(cpu)
  out=$(python3 benches/kafka_bench.py publish "127.0.0.1:$hp" bench "$COUNT" "$SIZE" "$PIPELINE") ||
    die "JSON-lines publish (fsync $1) failed"
  read -r n j_p <<<"$out"
  [ "$n" = "$COUNT" ] || die "JSON-lines publish (fsync $1): $n of $COUNT"
  c1=$(cpu)
  out=$(python3 benches/kafka_bench.py fetch "127.0.0.1:$hp" bench "$COUNT" "$SIZE" "$FETCH_MAX" "$FETCH_DEPTH") ||
    die "JSON-lines fetch (fsync $1) failed"
  read -r n j_c <<<"$out"
  [ "$n" = "$COUNT" ] || die "JSON-lines fetch (fsync $1): $n of $COUNT"
  c2=$(cpu)
  j_pcpu=$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.2f", b-a}')
  j_ccpu=$(awk -v a="$c1" -v b="$c2" 'BEGIN{printf "%.2f", b-a}')
  stop_server
}

row() { # label secs server_cpu_secs
  awk -v l="$1" -v s="$2" -v c="$3" -v n="$COUNT" -v b="$SIZE" \
    'BEGIN{printf "%-28s %10d %9.3f %12.0f %9.1f %13.2f\n", l, n, s, n/s, n*b/1e6/s, c}'
}

echo "count=$COUNT size=${SIZE}B one partition; kcat linger.ms=$LINGER_MS batch.num.messages=$BATCH;" \
  "JSON-lines pipeline=$PIPELINE fetch max=$FETCH_MAX depth=$FETCH_DEPTH"
for fsync in $FSYNCS; do
  kafka_run "$fsync"
  json_run "$fsync"
  printf '\n--fsync %s\n' "$fsync"
  printf '%-28s %10s %9s %12s %9s %13s\n' "" "messages" "seconds" "msg/s" "MB/s" "server cpu s"
  row "produce  kafka (kcat -P)" "$k_p" "$k_pcpu"
  row "produce  json-lines publish" "$j_p" "$j_pcpu"
  row "consume  kafka (kcat -C)" "$k_c" "$k_ccpu"
  row "consume  json-lines fetch" "$j_c" "$j_ccpu"
  awk -v kp="$k_p" -v jp="$j_p" -v kc="$k_c" -v jc="$j_c" \
    'BEGIN{printf "ratio kafka/json-lines (msg/s): produce %.2f  consume %.2f\n", jp/kp, jc/kc}'
done
