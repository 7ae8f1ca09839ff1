#!/usr/bin/env bash
# The reproductions behind docs/results.md, one command per result. Run from the repository root,
# with the data in ../shared/data (see recipes/*.toml). Each run writes its run directory
# (metrics.jsonl, best.npz, learning_curve.png) under runs/.
#
#   scripts/reproduce.sh              every result, in order (hours on a 2-core machine)
#   scripts/reproduce.sh NAME ...     only those, e.g. gowalla-mf-bpr ml1m-gmf
set -euo pipefail

declare -A COMMANDS=(
    [gowalla-mf-bpr]="recgrad train --config recipes/gowalla-mf-bpr.toml"
    [ml1m-gmf]="recgrad train --config recipes/ml1m-gmf.toml --threads 1"
    [gowalla-mf-bpr-tuned]="recgrad train --config recipes/gowalla-mf-bpr-tuned.toml"
    [gowalla-mf-bpr-dns]="recgrad train --config recipes/gowalla-mf-bpr-dns.toml"
    [gowalla-mf-infonce]="recgrad train --config recipes/gowalla-mf-infonce.toml"
    [ml1m-neumf]="recgrad train --config recipes/ml1m-neumf.toml --threads 1"
    [ml1m-mlp]="recgrad train --config recipes/ml1m-mlp.toml --threads 1"
    [ml1m-neumf-pretrained]="recgrad train --config recipes/ml1m-neumf-pretrained.toml --threads 1"
    [gowalla-lightgcn]="recgrad train --config recipes/gowalla-lightgcn.toml --threads 1"
    [gowalla-mf-best]="recgrad train --config recipes/gowalla-mf-best.toml"
)
# ml1m-neumf-pretrained starts from the runs of ml1m-gmf and ml1m-mlp (runs/ml1m-gmf, runs/ml1m-mlp): it comes after them.
ORDER=(gowalla-mf-bpr ml1m-gmf gowalla-mf-bpr-tuned gowalla-mf-bpr-dns gowalla-mf-infonce ml1m-neumf ml1m-mlp
       ml1m-neumf-pretrained gowalla-lightgcn gowalla-mf-best)

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
