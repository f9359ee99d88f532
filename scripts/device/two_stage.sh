#!/usr/bin/env bash
# The reader recipe in two device stages through train_gst.sh (results of the second into $OUT, the
# first's log and scalars into $OUT/s1): stage 1, reader-only updates (pose and cell heads, number-token
# vocabulary); stage 2, --init-from stage 1 with joint gen/est rows, half of each batch spatial QA
# (up to 4 questions per row) and the reader-only pairs. Needs .devdata/cache (with cells/) and
# .devdata/chat packed as in train_gst.sh. Env: N1 M1 (stage 1 max steps / minutes), N2 M2 (stage 2).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/devout}
S1="--preset tiny --set model.pose_head_dim=13 --set loss.pose_weight=1 --set model.reader.channels=96
 --set model.reader.cell_heads=true --set loss.cell_weight=1 --set code_init=decoder --set sequence.stem_pairs=512
 --set sequence.stem_warmup_steps=100000 --set train.batch_size=64 --set train.warmup_steps=200
 --set number_tokens=true --set train.eval_every=1000000 --set train.checkpoint_every=100000
 --set train.mixed_precision=bf16"
S2="--preset tiny --init-from /tmp/s1 --chat .devdata/chat --set train.batch_size=64 --set train.lr=5e-4
 --set train.warmup_steps=100 --set sequence.chat_fraction=0.5 --set sequence.chat_turns=4
 --set loss.pose_weight=1 --set loss.cell_weight=1 --set sequence.stem_pairs=512 --set number_tokens=true
 --set train.eval_every=1000000 --set train.checkpoint_every=100000 --set train.mixed_precision=bf16"
# shellcheck disable=SC2086  # the option strings are word lists
RUN=/tmp/s1 OUT=$OUT/s1 bash scripts/device/train_gst.sh $S1 --max-steps "$N1" --set train.max_minutes="$M1" &&
  rm -f "$OUT"/s1/export.tar* &&
  RUN=/tmp/s2 OUT=$OUT bash scripts/device/train_gst.sh $S2 --max-steps "$N2" --set train.max_minutes="$M2"
