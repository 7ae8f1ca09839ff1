#!/usr/bin/env bash
# The reproductions behind docs/results.md, one command per result. Run from the repository root,
# with the data in ../shared/data (see recipes/*.toml). Each run writes its run directory
# (metrics.jsonl, best.npz, learning_curve.png) under runs/.
#
#   scripts/reproduce.sh              every result, in order (hours on a 2-core machine)
#   scripts/reproduce.sh NAME ...     only those, e.g. gowalla-mf-bpr ml1m-gmf
set -euo pipefail

# Recipes that use the Trainer's lr_schedule / lr_min keys, which `recgrad train` does not parse
# yet: the same `recgrad train` with those two config keys added.
train_with_schedule() {
    python - "$@" <<'PY'
import functools
import sys

from recgrad import cli, training

EXTRA = ("lr_schedule", "lr_min")
cli.CONFIG_DEFAULTS.update(dict.fromkeys(EXTRA))
cli.CONVERTERS["lr_min"] = float
cli.CHOICES["lr_schedule"] = ("cosine",)
build_trainer = cli.build_trainer


def build_with_schedule(config, model, out_dir):
    extra = {key: config[key] for key in EXTRA if config[key] is not None}
    trainer_class = training.Trainer
    training.Trainer = functools.partial(trainer_class, **extra)
    try:
        return build_trainer(config, model, out_dir)
    finally:
        training.Trainer = trainer_class


cli.build_trainer = build_with_schedule
sys.exit(cli.main(["train", *sys.argv[1:]]))
PY
}

declare -A COMMANDS=(
    [gowalla-mf-bpr]="recgrad train --config recipes/gowalla-mf-bpr.toml"
    [ml1m-gmf]="train_with_schedule --config recipes/ml1m-gmf.toml"
    [gowalla-mf-bpr-tuned]="train_with_schedule --config recipes/gowalla-mf-bpr-tuned.toml"
    [gowalla-mf-infonce]="train_with_schedule --config recipes/gowalla-mf-infonce.toml"
    [ml1m-neumf]="recgrad train --config recipes/ml1m-neumf.toml"
)
ORDER=(gowalla-mf-bpr ml1m-gmf gowalla-mf-bpr-tuned gowalla-mf-infonce ml1m-neumf)

for name in "${@:-${ORDER[@]}}"; do
    if [[ -z "${COMMANDS[$name]:-}" ]]; then
        echo "reproduce.sh: unknown result '$name' (known: ${ORDER[*]})" >&2
        exit 2
    fi
    echo "== $name: ${COMMANDS[$name]}" >&2
    start=$(date +%s)
    ${COMMANDS[$name]}
    echo "== $name: $(( $(date +%s) - start )) s wall" >&2
done
