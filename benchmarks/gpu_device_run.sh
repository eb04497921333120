#!/usr/bin/env bash
# The GPU profile's device run (benchmarks/README.md "GPU"): on a machine with an NVIDIA GPU, from the source tree
# (no install: PYTHONPATH=.), within one time limit:
#   1. the full torch CUDA profile of both spaces (default GPU grid and protocol) into runs/gpu/<name>, resumable:
#      a second call of this script continues it;
#   2. the gpu-marked tests (and the loss test, which follows the weights onto the GPU);
#   3. the predictor fitted on the device, and budget fidelity there (searches at 1x128 and 32x128, measured whole).
# Everything it writes lands in $OUT (at most 8 files): env.txt, profile.json.out, profile.log, profile.tgz (runs/gpu,
# re-packed every 20 s, so a killed run still brings its journal back), tests.log, fit.log, fidelity.json,
# fidelity.log. A partial profile shipped in profiles/ (hwnas profile --close-partial) is resumed, not restarted.
# Usage: OUT=/tmp/out DEADLINE=480 bash benchmarks/gpu_device_run.sh   (DEADLINE: seconds for the whole script)
set -u
OUT=${OUT:-/tmp/hwnas-gpu-out}
DEADLINE=${DEADLINE:-480}
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of this script on a machine without a GPU (tiny grid)
mkdir -p "$OUT" runs/gpu
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
T0=$(date +%s)
left() { echo $((DEADLINE - ($(date +%s) - T0))); }

{ date -u; nvidia-smi 2>&1 | head -20; python3 - <<'EOF'
import json, torch
from latency.device import fingerprint
print(json.dumps(fingerprint(1), indent=1))
EOF
} > "$OUT/env.txt" 2>&1

NAME=$(python3 -c "
import torch
from latency.device import fingerprint, profile_name
print(profile_name(fingerprint(1), 'torch', torch.__version__, 1, '$DEVICE'))")
PROF=runs/gpu/$NAME
# a partial profile shipped from an earlier lease is resumed (a fresh machine of the same image has the same
# fingerprint); where the fingerprint differs, --force-new measures a new folder beside it (runs/gpu/NAME-2)
if [ ! -d "$PROF" ] && grep -qs '"status": "partial"' "profiles/$NAME/profile.json"; then
  cp -r "profiles/$NAME" "$PROF" && rm -f "$PROF/predictor.json"
fi
echo "profile folder $PROF ($(left) s left)"
EXTRA=()
[ "$DEVICE" = cpu ] && EXTRA=(--preset tiny --batch 1,2 --seq-len 16,32 --e2e 2)
( while sleep 20; do
    tar czf "$OUT/.profile.tgz" -C runs gpu 2>/dev/null && mv "$OUT/.profile.tgz" "$OUT/profile.tgz"
  done ) &
SNAP=$!
# stop the profile early enough to leave the tests two minutes; SIGINT ends it, the journal keeps every visit
timeout --signal=INT --kill-after=10 $(( $(left) - 150 )) python3 -m nas.cli profile --backend torch --device "$DEVICE" \
  --space adabert,nasbert "${EXTRA[@]}" --out "$PROF" --force-new --json > "$OUT/profile.json.out" 2> "$OUT/profile.log"
echo "profile rc=$? ($(left) s left)"
kill $SNAP 2>/dev/null; wait $SNAP 2>/dev/null
tar czf "$OUT/profile.tgz" -C runs gpu
PROF=$(ls -td runs/gpu/"$NAME"* | head -1)  # the folder written (NAME-2 where NAME held another setup)
tail -c 600 "$OUT/profile.json.out"; echo

timeout --kill-after=5 $(( $(left) > 150 ? 120 : $(left) - 30 )) python3 -m pytest -q -p no:cacheprovider -m gpu -rA --continue-on-collection-errors \
  tests/latency > "$OUT/tests.log" 2>&1
echo "gpu tests rc=$? ($(left) s left)"
timeout 40 python3 -m pytest -q -p no:cacheprovider tests/latency/test_loss.py -k device >> "$OUT/tests.log" 2>&1
echo "loss-on-device test rc=$?"
tail -n 15 "$OUT/tests.log"

if grep -q '"status": "complete"' "$PROF/profile.json" 2>/dev/null && [ "$(left)" -gt 60 ]; then
  timeout $(( $(left) - 45 )) python3 -m nas.cli fit "$PROF" > "$OUT/fit.log" 2>&1
  echo "fit rc=$? ($(left) s left)"
  CTX=1x128,32x128
  [ "$DEVICE" = cpu ] && CTX=1x16,2x32
  [ "$(left)" -gt 40 ] && timeout --signal=INT $(( $(left) - 15 )) python3 benchmarks/budget_fidelity.py "$PROF" \
    --contexts $CTX --agreement 8 --out "$OUT/fidelity.json" > "$OUT/fidelity.log" 2>&1
  echo "fidelity rc=$? ($(left) s left)"
  tail -n 5 "$OUT/fidelity.log"
fi
echo "done ($(left) s left)"
