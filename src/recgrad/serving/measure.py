"""The serving measurements of docs/performance.md, one process each, short.

    python -m recgrad.serving.measure ann --run DIR | --synthetic N [--queries 1000] [--ef-search 128]
        recall of the HNSW top 20 against the exact top 20, and queries/s of both (one thread);
        queries are the run's users (their training items excluded) or Gaussian vectors.
    python -m recgrad.serving.measure http --url http://127.0.0.1:8000 --users 1,2,3 [--clients 16]
        requests/s and p50/p99 latency of GET /recommend?n=20 and POST /recommend (fold-in of a
        user's 20 first items; --post-items) or GET /health (--health) from `clients` concurrent
        keep-alive connections.
"""

import argparse
import http.client
import json
import os
import threading
import time
import urllib.parse

import numpy as np


def measure_ann(args):
    import faiss
    from threadpoolctl import threadpool_limits

    from recgrad.serving.index import ExactIndex, HNSWIndex

    rng = np.random.default_rng(0)
    if args.run:
        from recgrad.cli import load_dataset, read_toml, resolve_config
        from recgrad.models import load_model
        from recgrad.rundir import read_id_maps

        model = load_model(os.path.join(args.run, "best.npz"))
        data = load_dataset(resolve_config(read_toml(os.path.join(args.run, "config.toml")), {}),
                            id_maps=read_id_maps(args.run))
        vectors = model.item_factors()
        users = rng.choice(data.n_users, size=min(args.queries, data.n_users), replace=False)
        queries = model.user_factors(users)
        exclude = [data.train[user].indices.astype(np.int64) for user in users]
        name = f"{args.run}: {len(vectors)} items x {vectors.shape[1]}"
    else:
        vectors = rng.normal(size=(args.synthetic, 64)).astype(np.float32)
        queries = rng.normal(size=(args.queries, 64)).astype(np.float32)
        exclude = [np.zeros(0, dtype=np.int64)] * args.queries
        name = f"synthetic Gaussian: {args.synthetic} items x 64"
    with threadpool_limits(1):
        started = time.perf_counter()
        exact, _ = ExactIndex(vectors).search(queries, 20, exclude)
        exact_qps = len(queries) / (time.perf_counter() - started)
        started = time.perf_counter()
        index = HNSWIndex(vectors, ef_search=args.ef_search, threads=args.build_threads)
        build = time.perf_counter() - started
        faiss.omp_set_num_threads(1)  # the queries on one thread, as the exact scan
        rows = []
        for ef in sorted({args.ef_search, *args.also_ef}):
            index.ef_search = ef
            started = time.perf_counter()
            approx, _ = index.search(queries, 20, exclude)
            qps = len(queries) / (time.perf_counter() - started)
            recall = np.mean([len(set(a) & set(e)) / 20 for a, e in zip(approx, exact)])
            rows.append({"ef_search": ef, "recall@20 vs exact": round(float(recall), 4), "hnsw qps": round(qps),
                         "exact qps": round(exact_qps), "speed-up": round(qps / exact_qps, 2)})
    print(json.dumps({"catalogue": name, "queries": len(queries),
                      f"build seconds ({args.build_threads} threads)": round(build, 1),
                      "load average": os.getloadavg()[0], "rows": rows}, indent=2))


def measure_http(args):
    url = urllib.parse.urlparse(args.url)
    users = args.users.split(",")
    requests = [("GET", f"/recommend?user={user}&n=20", None) for user in users]
    if args.health:  # the service's own floor: the same client and framework, no model work
        requests = [("GET", "/health", None)]
    if args.post_items:
        bodies = [json.dumps({"items": items.split(), "n": 20}) for items in args.post_items.split(";")]
        requests = [("POST", "/recommend", body) for body in bodies]
    latencies, lock, errors = [], threading.Lock(), []
    deadline = time.monotonic() + args.seconds

    def client(offset):
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        count = offset
        mine = []
        while time.monotonic() < deadline:
            method, path, body = requests[count % len(requests)]
            count += 1
            started = time.perf_counter()
            connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            if response.status != 200:
                errors.append(response.status)
        connection.close()
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i * 7,)) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ms = 1000 * np.array(latencies)
    print(json.dumps({"requests": len(latencies), "errors": len(errors), "clients": args.clients,
                      "requests/s": round(len(latencies) / elapsed), "p50 ms": round(float(np.percentile(ms, 50)), 2),
                      "p99 ms": round(float(np.percentile(ms, 99)), 2), "load average": os.getloadavg()[0]}))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recgrad.serving.measure", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    ann = commands.add_parser("ann")
    source = ann.add_mutually_exclusive_group(required=True)
    source.add_argument("--run")
    source.add_argument("--synthetic", type=int)
    ann.add_argument("--queries", type=int, default=1000)
    ann.add_argument("--ef-search", type=int, default=128)
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
