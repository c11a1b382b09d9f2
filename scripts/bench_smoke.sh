#!/usr/bin/env bash
# `make bench-smoke`: every benchmark and device check in its --smoke mode, one after another.
# Smoke runs write to temporary folders, so the tree must be as clean afterwards as before.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
before=$(git status --porcelain)
failed=()
start=$SECONDS
for script in benchmarks/*.py scripts/device/*.py; do
  [ -f "$script" ] || continue
  t0=$SECONDS
  if "$PY" "$script" --smoke >"/tmp/bench-smoke-$(basename "$script" .py).log" 2>&1; then
    echo "ok     $script ($((SECONDS - t0)) s)"
  else
    echo "FAILED $script ($((SECONDS - t0)) s): see /tmp/bench-smoke-$(basename "$script" .py).log"
    failed+=("$script")
  fi
done
echo "bench-smoke: $((SECONDS - start)) s in all"
if [ "$(git status --porcelain)" != "$before" ]; then
  echo "bench-smoke: a smoke run changed the working tree:"; git status --porcelain; exit 1
fi
[ ${#failed[@]} -eq 0 ] || { echo "bench-smoke: ${#failed[@]} failed: ${failed[*]}"; exit 1; }
