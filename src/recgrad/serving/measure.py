"""The serving measurements of docs/performance.md, one process each, short.

    python -m recgrad.serving.measure ann --run DIR | --synthetic N [--queries 1000] [--also-ef 256,512]
        recall of the HNSW top 20 against the exact top 20, and queries/s of both (one thread), at
        the index's default efSearch ("auto": calibrated on other users, or on the table's rows)
        and at the --also-ef values; queries are the run's users (their training items excluded)
        or Gaussian vectors.
    python -m recgrad.serving.measure http --url http://127.0.0.1:8000 --users 1,2,3 [--clients 16]
        requests/s and p50/p99 latency of GET /recommend?n=20 and POST /recommend (fold-in of a
        user's 20 first items; --post-items) or GET /health (--health) from `clients` concurrent
        keep-alive connections, coroutines on one event loop (uvloop when installed).
"""

import argparse
import asyncio
import json
import os
import time
import urllib.parse

import numpy as np


def measure_ann(args):
    import faiss
    from threadpoolctl import threadpool_limits

    from recgrad.serving.index import ExactIndex, HNSWIndex, mean_recall

    rng = np.random.default_rng(0)
    if args.run:
        from recgrad.cli import load_dataset, read_toml, resolve_config
        from recgrad.models import load_model
        from recgrad.rundir import read_id_maps

        model = load_model(os.path.join(args.run, "best.npz"))
        data = load_dataset(resolve_config(read_toml(os.path.join(args.run, "config.toml")), {}),
                            id_maps=read_id_maps(args.run))
        vectors = model.item_factors()
        users = rng.permutation(data.n_users)
        users, calibration = users[:args.queries], np.sort(users[args.queries:args.queries + 500])
        queries, calibration = model.user_factors(users), model.user_factors(calibration)  # other users
        exclude = [data.train[user].indices.astype(np.int64) for user in users]
        name = f"{args.run}: {len(vectors)} items x {vectors.shape[1]}"
    else:
        vectors = rng.normal(size=(args.synthetic, 64)).astype(np.float32)
        queries = rng.normal(size=(args.queries, 64)).astype(np.float32)
        # the workload's queries (other draws), as serve passes user vectors; or the index's default
        calibration = None if args.calibrate_on_rows else rng.normal(size=(500, 64)).astype(np.float32)
        exclude = [np.zeros(0, dtype=np.int64)] * args.queries
        name = f"synthetic Gaussian: {args.synthetic} items x 64"
    with threadpool_limits(1):
        started = time.perf_counter()
        exact, _ = ExactIndex(vectors).search(queries, 20, exclude)
        exact_qps = len(queries) / (time.perf_counter() - started)
        faiss.omp_set_num_threads(args.build_threads)
        started = time.perf_counter()
        options = {} if args.ef_construction is None else {"ef_construction": args.ef_construction}
        index = HNSWIndex(vectors, ef_search=args.ef_search, calibration_queries=calibration, **options)
        build = time.perf_counter() - started  # with "auto": the calibration included
        faiss.omp_set_num_threads(1)  # the queries on one thread, as the exact scan
        default = index.ef_search
        rows = []
        for ef in sorted({default, *args.also_ef}):
            index.ef_search = ef
            started = time.perf_counter()
            approx, _ = index.search(queries, 20, exclude)
            qps = len(queries) / (time.perf_counter() - started)
            recall = mean_recall(approx, exact)
            rows.append({"ef_search": f"{ef} ({args.ef_search})" if ef == default else ef,
                         "recall@20 vs exact": round(recall, 4), "hnsw qps": round(qps),
                         "exact qps": round(exact_qps), "speed-up": round(qps / exact_qps, 2)})
    print(json.dumps({"catalogue": name, "queries": len(queries), "ef_construction": index.index.hnsw.efConstruction,
                      f"build seconds ({args.build_threads} threads)": round(build, 1),
                      "calibration recall@20": index.calibration_recall,
                      "load average": os.getloadavg()[0], "rows": rows}, indent=2))


def measure_http(args):
    url = urllib.parse.urlparse(args.url)
    host = f"{url.hostname}:{url.port}"
    requests = [_request(host, "GET", f"/recommend?user={user}&n=20") for user in args.users.split(",")]
    if args.health:  # the service's own floor: the same client and framework, no model work
        requests = [_request(host, "GET", "/health")]
    if args.post_items:
        requests = [_request(host, "POST", "/recommend", json.dumps({"items": items.split(), "n": 20}))
                    for items in args.post_items.split(";")]
    try:
        import uvloop
    except ModuleNotFoundError:
        uvloop = None
    runner = asyncio.run if uvloop is None else uvloop.run
    latencies, statuses, elapsed = runner(_load(url.hostname, url.port, requests, args.clients, args.seconds))
    ms = 1000 * np.array(latencies)
    print(json.dumps({"requests": len(latencies), "errors": sum(status != 200 for status in statuses),
                      "clients": args.clients, "requests/s": round(len(latencies) / elapsed),
                      "p50 ms": round(float(np.percentile(ms, 50)), 2),
                      "p99 ms": round(float(np.percentile(ms, 99)), 2), "load average": os.getloadavg()[0]}))


async def _load(hostname, port, requests, clients, seconds):
    """(latencies, statuses, elapsed) of `clients` coroutines, each a keep-alive connection sending
    `requests` in turn (staggered) until `seconds` have passed.

    One event loop and raw streams rather than threads and http.client: the client's own Python
    work and thread switches (the GIL's 5 ms interval) would otherwise be part of every latency.
    A latency runs from writing the request to reading the last byte of the answer.
    """
    latencies, statuses = [], []
    deadline = time.monotonic() + seconds

    async def client(offset):
        reader, writer = await asyncio.open_connection(hostname, port)
        count = offset
        while time.monotonic() < deadline:
            request = requests[count % len(requests)]
            count += 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(_content_length(head))
            latencies.append(time.perf_counter() - started)
            statuses.append(int(head.split(b" ", 2)[1]))
        writer.close()
        await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(client(i * 7) for i in range(clients)))
    return latencies, statuses, time.perf_counter() - started


def _request(host, method, path, body=None):
    """The bytes of one HTTP/1.1 request (keep-alive), with a JSON body when given."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    payload = b"" if body is None else body.encode()
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def _content_length(head):
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise ValueError(f"an answer without Content-Length: {head[:200]!r}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recgrad.serving.measure", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    ann = commands.add_parser("ann")
    source = ann.add_mutually_exclusive_group(required=True)
    source.add_argument("--run")
    source.add_argument("--synthetic", type=int)
    ann.add_argument("--queries", type=int, default=1000)
    ann.add_argument("--ef-search", type=lambda text: text if text == "auto" else int(text), default="auto",
                     help='the index\'s efSearch: "auto" (the default: calibrated for recall@20 0.95) or a number')
    ann.add_argument("--calibrate-on-rows", action="store_true",
                     help="--synthetic: calibrate on the index's default, its own rows, not on Gaussian queries")
    ann.add_argument("--ef-construction", type=int, help="the graph's build-time list (default: the index's)")
    ann.add_argument("--also-ef", type=lambda text: [int(v) for v in text.split(",")], default=[])
    ann.add_argument("--build-threads", type=int, default=1, help="threads that build the graph (queries: 1)")
    ann.set_defaults(handler=measure_ann)
    web = commands.add_parser("http")
    web.add_argument("--url", default="http://127.0.0.1:8000")
    web.add_argument("--users", required=True, help="comma-separated raw user ids to cycle through")
    web.add_argument("--post-items", help="';'-separated item lists: POST fold-ins instead of GETs")
    web.add_argument("--health", action="store_true", help="GET /health instead: the cost of HTTP alone")
    web.add_argument("--clients", type=int, default=16)
    web.add_argument("--seconds", type=float, default=10.0)
    web.set_defaults(handler=measure_http)
    args = parser.parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main()
