#!/usr/bin/env bash
# Training throughput of an older checkout and of this one, alternately (same hour, same machine), PAIRS times:
#   git worktree add --detach ../sqlcopilot-base df8a782
#   BASE=../sqlcopilot-base bash scripts/benchmark_training_pair.sh work/smollm2_base ../shared/spider
# The old path's settings are the old cpu profile's (batch 4 x 2, 512 tokens, CREATE TABLE prompt); the new one's
# are the packed cpu profile's. With MID=<another checkout>, that checkout also runs with the new settings, between
# the two (e.g. the packed path before a change to it). STEPS (default 5) timed steps a run after a warm-up step.
# Each run prints benchmark_training.py's JSON (examples_per_s, tokens_per_s, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$(realpath "$1"); SPIDER=$(realpath "$2"); BASE=$(realpath "${BASE:?set BASE to the older checkout}")
HERE=$(pwd); PYTHON="$HERE/.venv/bin/python"; STEPS=${STEPS:-5}  # not realpath: that leaves the venv
NEW_SETTINGS=(batch_size=1 grad_accum_steps=2 bf16_autocast=true max_seq_len=1024 max_schema_tokens=400
              prompt_form=compact value_hints=3)
run_new() {  # checkout
  (cd "$1" && PYTHONPATH="$1" OMP_WAIT_POLICY=PASSIVE "$PYTHON" "$HERE/scripts/benchmark_training.py" \
     --model "$MODEL" --spider "$SPIDER" --steps "$STEPS" --set "${NEW_SETTINGS[@]}")
}
for pair in $(seq "${PAIRS:-2}"); do
  echo "== pair $pair old $(date -u +%H:%M:%S)"
  (cd "$BASE" && PYTHONPATH="$BASE" OMP_WAIT_POLICY=PASSIVE "$PYTHON" "$HERE/scripts/benchmark_training.py" \
     --model "$MODEL" --spider "$SPIDER" --steps "$STEPS" \
     --set batch_size=4 grad_accum_steps=2 bf16_autocast=true max_seq_len=512 max_schema_tokens=400)
  if [ -n "${MID:-}" ]; then
    echo "== pair $pair mid ($(git -C "$MID" rev-parse --short HEAD)) $(date -u +%H:%M:%S)"
    run_new "$(realpath "$MID")"
  fi
  echo "== pair $pair new $(date -u +%H:%M:%S)"
  run_new "$HERE"
done
echo "== end $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
