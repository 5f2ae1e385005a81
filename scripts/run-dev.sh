#!/usr/bin/env bash
# `make run`: the dashboard, a Celery worker (with beat) and the watcher side by side; Ctrl-C
# stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"

trap 'trap - EXIT INT TERM; kill $(jobs -p) 2>/dev/null || true; wait' EXIT INT TERM

"$BIN/celery" -A dashboard worker --beat --pool=solo --loglevel=INFO -n "dev@%h" &
"$BIN/python" manage.py watch_cluster &
"$BIN/python" manage.py runserver "$HOST:$PORT" &
# Stop everything as soon as either one exits.
wait -n
