"""`recgrad similar`: the items (or users) most similar to given ones, one output line per query,
`query<TAB>id id ...`, by the cosine of the model's vectors (`FactorModel.similar_items`)."""

import sys

from recgrad.serving.run import INDEXES, ServedRun, ServingError


def add_arguments(parser):
    parser.add_argument("--run", required=True, help="a run directory written by recgrad train")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--items", help="comma-separated raw item ids: the items similar to each")
    query.add_argument("--users", help="comma-separated raw user ids: the users similar to each")
    parser.add_argument("-n", type=int, default=10, help="answers per query (default 10)")
    parser.add_argument("--index", default="exact", choices=INDEXES, help="exact (default) or faiss (HNSW)")
    parser.add_argument("--data", help="the run's data elsewhere (default: the run's config)")
    parser.add_argument("--format", help="format of --data (default auto)")
    parser.add_argument("--output", help="output file (default: standard output)")


def run(args):
    from recgrad.cli import UsageError, _load_run

    config, model, _, dataset = _load_run(args)
    side, flag, text = ("item", "--items", args.items) if args.items is not None else ("user", "--users", args.users)
    raws = [token.strip() for token in text.split(",") if token.strip()]
    if not raws:
        raise UsageError(f"{flag}: expected comma-separated raw {side} ids, got {text!r}")
    count = getattr(dataset, f"n_{side}s") - 1
    if not 1 <= args.n <= count:
        raise UsageError(f"-n: expected an integer in [1, {count}] (the other {side}s), got {args.n}")
    try:
        served = ServedRun(config, model, dataset, index=args.index)
        ids, _ = served.similar(side, raws, args.n)
    except ServingError as error:
        raise UsageError(f"{flag}: {error}") from None
    names = served.raw_items if side == "item" else served.raw_users
    lines = [f"{raw}\t{' '.join(map(str, names(row)))}\n" for raw, row in zip(raws, ids)]
    handle = open(args.output, "w") if args.output else sys.stdout
    try:
        handle.writelines(lines)
    finally:
        if args.output:
            handle.close()
    return 0
