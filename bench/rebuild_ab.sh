#!/bin/bash
# Alternate two source trees' rebuilds of one prepared project: what a change to the
# snapshot code does to a rebuild, each run from the same caches and the same change.
#
#   .venv/bin/python bench/snapshot.py --towns 4 --keep      # then, once:
#   cp -a bench/.runs/snapshot-XXXX/res13 bench/.runs/snapshot-XXXX/res13.base
#   git worktree add /tmp/old <commit>
#   bench/rebuild_ab.sh bench/.runs/snapshot-XXXX 100 50 3 /tmp/old "$PWD"
#
# Each run restores res13 from res13.base, drops the athlete-month rows of every STEP-th
# athlete from OFFSET on (as opt-outs would; 100 50: 1% of them), and rebuilds
# png.toml's site with `heatmetro snapshot`; it prints the CLI's stages line and the
# snapshot's time. Run where nothing else runs: the machines drift within the hour.
set -euo pipefail
PROJECT=$(cd "$1" && pwd); STEP=$2; OFFSET=$3; RUNS=$4; shift 4
PY=$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python
for run in $(seq "$RUNS"); do
  for src in "$@"; do
    rm -rf "$PROJECT/res13" && cp -a "$PROJECT/res13.base" "$PROJECT/res13"
    sqlite3 "$PROJECT/res13/state/shards/0000.db" "DELETE FROM athlete_months WHERE
      athlete_id IN (SELECT athlete_id FROM (SELECT athlete_id, row_number() OVER
      (ORDER BY athlete_id) - 1 AS i FROM (SELECT DISTINCT athlete_id FROM athlete_months))
      WHERE i % $STEP = $OFFSET)"
    sync
    out=$(cd "$PROJECT/res13" && HEATMETRO_SALT=bench-salt-not-secret PYTHONPATH="$src" \
      SOURCE_DATE_EPOCH=1700000000 "$PY" -m heatmetro.cli snapshot -c png.toml \
      --month 2021-02 2>&1)
    echo "run $run $src: $(grep -o 'stages.*' <<<"$out"); $(grep -o 'in [0-9.]* s ->' <<<"$out" | cut -d' ' -f1-3)"
  done
done
