#!/usr/bin/env bash
# Local single-node Kafka (KRaft) for development and tests, from Maven Central jars.
#
#   kafka.sh up      resolve jars (once), format storage (once), start, wait for metadata;
#                    a no-op when a broker already serves metadata on 127.0.0.1:9092
#   kafka.sh down    stop the broker that `up` started (by its pid), and only that one
#   kafka.sh status  say whether a broker answers and whether it is ours
#
# Besides plaintext on 127.0.0.1:9092, the broker listens with SASL_SSL on 127.0.0.1:9094
# (user `triggers`, password `triggers-secret`; SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN),
# with a certificate signed by a CA made on the first start: clients trust
# $state/tls/ca.pem (`kafka.sh ca` prints its path).
#
# State (jars, data, pid, log, TLS files) lives in git-ignored folders beside this script.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lib="$here/lib"
state="${TRIGGERS_KAFKA_STATE_DIR:-$here/.state}"
pidfile="$state/kafka.pid"
logfile="$state/kafka.log"
props="$state/server.properties"
bootstrap="127.0.0.1:9092"
tls="$state/tls"
tls_password="triggers-local-keystore"
scram_user="triggers"
scram_password="triggers-secret"
java_opts="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
# The broker gets the heap and collector options Kafka's own start scripts give it
# (kafka-server-start.sh, kafka-run-class.sh): a fixed 1 GiB heap, G1 aiming at 20 ms
# pauses. With the JVM's defaults instead (200 ms pauses, a heap growing from 256 MiB),
# young collections of 20-45 ms came every 1.5-3 s under the event-path bench, and on a
# broker holding test runs' topics, marking cycles took a core for half a second.
broker_opts="${KAFKA_HEAP_OPTS:--Xms1g -Xmx1g} ${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true}"

log() { printf 'kafka: %s\n' "$*" >&2; }

kjava() {
  java $java_opts -Dlog4j2.configurationFile="$here/log4j2.xml" -cp "$lib/*" "$@"
}

resolve_jars() {
  if [[ -f "$lib/.complete" ]]; then return; fi
  log "resolving Apache Kafka jars with Maven (first run only)"
  rm -rf "$lib"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$lib" -DincludeScope=runtime >&2
  touch "$lib/.complete"
}

serves_metadata() {
  # TopicCommand asks the broker for metadata: success means clients can work.
  kjava org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --list \
    --command-config <(printf 'request.timeout.ms=3000\ndefault.api.timeout.ms=4000\n') \
    >/dev/null 2>&1
}

our_pid() {
  [[ -f "$pidfile" ]] || return 1
  local pid
  pid=$(cat "$pidfile")
  # Only a live process started with our properties file counts as ours.
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$props"; then
    echo "$pid"
  else
    return 1
  fi
}

make_certificates() {
  # A CA and a broker certificate for 127.0.0.1 and localhost, made once per state folder.
  if [[ -f "$tls/broker.p12" ]]; then return; fi
  log "making a local CA and the broker's TLS certificate ($tls)"
  mkdir -p "$tls"
  (
    cd "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=triggers local CA" \
      -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout broker.key -out broker.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile san.ext -out broker.pem 2>/dev/null
    openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker \
      -out broker.p12.partial -passout "pass:$tls_password"
    mv broker.p12.partial broker.p12
  )
}

create_scram_users() {
  # Idempotent: the same credentials are set again on every start (one mechanism per
  # request: the broker refuses two changes of one user's credentials in one).
  local mechanism
  for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
    kjava org.apache.kafka.tools.ConfigCommand --bootstrap-server "$bootstrap" --alter \
      --add-config "$mechanism=[password=$scram_password]" \
      --entity-type users --entity-name "$scram_user" >/dev/null
  done
}

up() {
  if our_pid >/dev/null; then
    if serves_metadata; then log "already running (pid $(our_pid))"; return; fi
  elif serves_metadata; then
    log "a broker already serves $bootstrap; leaving it alone"; return
  fi
  resolve_jars
  mkdir -p "$state/data"
  make_certificates
  {
    cat "$here/server.properties"
    printf '\nlog.dirs=%s\n' "$state/data"
    printf 'ssl.keystore.location=%s\nssl.keystore.password=%s\n' "$tls/broker.p12" "$tls_password"
  } >"$props"
  if [[ ! -f "$state/data/meta.properties" ]]; then
    local cluster_id
    cluster_id=$(kjava kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    log "formatting KRaft storage (cluster $cluster_id)"
    kjava kafka.tools.StorageTool format -t "$cluster_id" -c "$props" >&2
  fi
  if ! our_pid >/dev/null; then
    log "starting broker on $bootstrap (log: $logfile)"
    # setsid: the broker outlives the shell that started it and ignores its Ctrl-C.
    setsid nohup java $broker_opts -Dlog4j2.configurationFile="$here/log4j2.xml" \
      -cp "$lib/*" kafka.Kafka "$props" >"$logfile" 2>&1 </dev/null &
    echo $! >"$pidfile"
  fi
  local deadline=$((SECONDS + ${TRIGGERS_KAFKA_START_TIMEOUT:-120}))
  until serves_metadata; do
    if ! our_pid >/dev/null; then
      log "broker exited during start-up; last lines of $logfile:"; tail -n 30 "$logfile" >&2; exit 1
    fi
    if ((SECONDS > deadline)); then log "broker did not serve metadata in time"; exit 1; fi
    sleep 1
  done
  create_scram_users
  log "ready on $bootstrap, and SASL_SSL on 127.0.0.1:9094 (pid $(our_pid))"
}

down() {
  local pid
  if ! pid=$(our_pid); then log "no broker of ours is running"; rm -f "$pidfile"; return; fi
  log "stopping broker (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; log "stopped"; return; }
    sleep 0.5
  done
  log "broker did not stop in 30 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

status() {
  local pid=""
  pid=$(our_pid) || true
  if serves_metadata; then
    if [[ -n "$pid" ]]; then echo "running (ours, pid $pid) on $bootstrap"; else echo "running (not ours) on $bootstrap"; fi
  elif [[ -n "$pid" ]]; then
    echo "starting or unhealthy (ours, pid $pid)"; return 1
  else
    echo "not running"; return 3
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  ca) echo "$tls/ca.pem" ;;
  *) echo "usage: $0 up|down|status|ca" >&2; exit 2 ;;
esac
