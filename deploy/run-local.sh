#!/usr/bin/env bash
# `make run`: everything for a local try in one terminal. Ctrl-C stops it all.
#
# Starts Kafka (unless TRIGGERS_KAFKA_BOOTSTRAP names a broker), creates the topics,
# applies the three example triggers, then runs the worker, the HTTP service and the
# reference runner with their logs interleaved and prefixed.
set -euo pipefail
cd "$(dirname "$0")/.."
triggers=.venv/bin/triggers
examples=${TRIGGERS_EXAMPLES_DIR:-examples}

if [[ -z "${TRIGGERS_KAFKA_BOOTSTRAP:-}" ]]; then
  deploy/kafka/kafka.sh up
  export TRIGGERS_KAFKA_BOOTSTRAP=127.0.0.1:9092
fi
# A local-only key for the `default` workspace (the examples' workspace), like the compose file.
export TRIGGERS_API_KEYS=${TRIGGERS_API_KEYS:-'{"dev-key": "default"}'}
# The Slack example's secret: a demo value unless you set your own before `make run`.
if [[ -z "${SLACK_WEBHOOK_SECRET:-}" ]]; then
  export SLACK_WEBHOOK_SECRET=demo-slack-secret
  echo "run: SLACK_WEBHOOK_SECRET=demo-slack-secret (a demo value for the Slack example; export your own before make run)" >&2
fi
"$triggers" topics create
if [[ -d "$examples" ]]; then
  "$triggers" apply -f "$examples"
else
  echo "run: no examples at $examples (set TRIGGERS_EXAMPLES_DIR); skipping" >&2
fi

pids=()
stop() {
  trap - INT TERM EXIT
  echo "run: stopping..." >&2
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  echo "run: stopped (the broker keeps running; \`make kafka-down\` stops it)" >&2
}
trap stop INT TERM EXIT

prefixed() {
  local name=$1; shift
  # Each component in its own process group, so Ctrl-C reaches it only through stop().
  setsid "$triggers" "$@" > >(sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
}
prefixed worker worker
prefixed serve serve
prefixed runner runner
echo "run: worker, serve (http://${TRIGGERS_HTTP_HOST:-127.0.0.1}:${TRIGGERS_HTTP_PORT:-8080}) and runner started; Ctrl-C stops them" >&2
echo "run: console at http://${TRIGGERS_HTTP_HOST:-127.0.0.1}:${TRIGGERS_HTTP_PORT:-8080}/ui (key: dev-key, unless TRIGGERS_API_KEYS says otherwise)" >&2
wait -n "${pids[@]}" || true
