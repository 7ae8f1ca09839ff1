"""`recgrad serve`: an HTTP JSON service over a trained run (FastAPI + uvicorn, the `serve` extra).

The run is loaded once, as `recgrad recommend --run DIR` loads it, and every answer is in raw ids
(the ids of the data files; in a request a raw id may be a JSON string or number):

    GET  /health                          {"status": "ok", "model": ..., "users": N, "items": M}
    GET  /recommend?user=RAW&n=20         {"user": RAW, "items": [...], "scores": [...]}, the user's
         [&exclude_seen=false]            training items excluded unless exclude_seen=false
    POST /recommend {"items": [RAW, ...], "n": 20}
                                          fold-in of a new user: {"items", "scores",
                                          "unknown_items"} (unknown ids listed and ignored)
    GET  /similar?item=RAW&n=20           {"item": RAW, "items": [...], "scores": [...]} (or user=RAW)
    GET  /docs, /openapi.json             FastAPI's OpenAPI page and schema

Every bad input answers 4xx with {"error": "<one sentence>"}: 404 for an unknown user or item id
or path, 400 for everything else (n outside [1, the catalogue], malformed JSON, wrong types,
a request the model cannot answer), 405 for a wrong method. The model is called under one lock:
the towers of a TwoTower keep layer caches that concurrent calls would share. GET /recommend runs
on the event loop and concurrent ones are scored together, one matrix product for the batch
(`recgrad.serving.batching`).
"""

import json
import socket
import sys
import threading

from recgrad.serving.batching import RecommendBatcher
from recgrad.serving.run import INDEXES, ServedRun, ServingError, UnknownId


def add_arguments(parser):
    parser.add_argument("--run", required=True, help="a run directory written by recgrad train")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--index", default="exact", choices=INDEXES, help="exact (default) or faiss (HNSW)")
    parser.add_argument("--data", help="the run's data elsewhere (default: the run's config)")
    parser.add_argument("--format", help="format of --data (default auto)")


def run(args):
    from recgrad.cli import UsageError, _load_run

    try:
        import fastapi  # noqa: F401  (checked before the run is loaded)
        import uvicorn
    except ModuleNotFoundError:
        raise UsageError("serve needs fastapi and uvicorn, which are not installed: pip install 'recgrad[serve]'") \
            from None
    if not 0 < args.port < 65536:
        raise UsageError(f"--port: expected an integer in [1, 65535], got {args.port}")
    try:
        with socket.create_server((args.host, args.port)):
            pass
    except OSError as error:
        raise UsageError(f"--host {args.host} --port {args.port}: cannot listen there: {error.strerror}") from None
    config, model, _, dataset = _load_run(args)
    try:
        served = ServedRun(config, model, dataset, index=args.index)
    except ServingError as error:
        raise UsageError(str(error)) from None
    served.warm_up()
    summary = served.index_summary()
    if summary:
        print(f"recgrad: HNSW {summary}", file=sys.stderr, flush=True)
    print(f"recgrad: serving {args.run} ({type(model).__name__}, {dataset.n_users} users, {dataset.n_items} items, "
          f"{args.index} index) on http://{args.host}:{args.port} (OpenAPI page: /docs)", file=sys.stderr, flush=True)
    uvicorn.run(create_app(served), host=args.host, port=args.port, log_level="warning")
    return 0


def create_app(served):
    """The FastAPI application answering for `served` (a `recgrad.serving.run.ServedRun`)."""
    from fastapi import FastAPI, Query, Response
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
    from starlette.exceptions import HTTPException

    RawId = StrictInt | StrictStr
    lock = threading.Lock()
    batcher = RecommendBatcher(served, lock)

    class NewUser(BaseModel):
        """A user who was not in the training data, by the items they interacted with."""

        model_config = ConfigDict(extra="forbid")
        items: list[RawId] = Field(description="raw item ids the user interacted with (unknown ones are ignored)")
        n: StrictInt = Field(20, description="number of items to return, 1 .. the catalogue")

    app = FastAPI(title="recgrad", summary="Recommendations from a trained recgrad run, in raw ids.",
                  description=__doc__)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, error):
        return JSONResponse(status_code=400, content={"error": _describe(error.errors())})

    @app.exception_handler(HTTPException)
    async def http_error(request, error):
        return JSONResponse(status_code=error.status_code, content={"error": str(error.detail)})

    @app.exception_handler(ServingError)
    async def bad_request(request, error):
        return JSONResponse(status_code=404 if isinstance(error, UnknownId) else 400, content={"error": str(error)})

    @app.get("/health", summary="Liveness, the model and the catalogue size")
    def health():
        return {"status": "ok", "model": served.model_name, "users": served.dataset.n_users,
                "items": served.dataset.n_items}

    class Recommendation(BaseModel):
        """A known user's top n, best first, in raw ids, with the model's scores."""

        user: RawId
        items: list[RawId]
        scores: list[float]

    @app.get("/recommend", summary="Top-n items for a known user", response_model=Recommendation)
    async def recommend(user: str = Query(description="raw user id"),
                        n: int = Query(20, description="1 .. the catalogue"),
                        exclude_seen: bool = Query(True, description="drop the user's training items")):
        n = served.check_n(n)
        index = served.user(user)
        ids, scores = await batcher.recommend(index, n, exclude_seen)
        # the JSON written here, not by FastAPI's encoder: a quarter of the framework's time per
        # request on the busiest endpoint (0.25 -> 0.2 ms); response_model still documents it
        body = {"user": served.raw_users([index])[0], "items": served.raw_items(ids),
                "scores": scores[ids >= 0].tolist()}
        return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")

    @app.post("/recommend", summary="Top-n items for a new user (fold-in), their items excluded")
    def recommend_new(request: NewUser):
        n = served.check_n(request.n)
        with lock:
            items, scores, unknown = served.recommend_new(request.items, n)
        return {"items": items, "scores": scores, "unknown_items": unknown}

    @app.get("/similar", summary="The n items (or users) most similar to one, by cosine")
    def similar(item: str | None = Query(None, description="raw item id"),
                user: str | None = Query(None, description="raw user id"), n: int = Query(20)):
        if (item is None) == (user is None):
            raise ServingError("similar: give exactly one of item=RAW_ID or user=RAW_ID")
        side, raw = ("item", item) if item is not None else ("user", user)
        n = served.check_n(n, getattr(served.dataset, f"n_{side}s") - 1)
        with lock:
            ids, scores = served.similar(side, [raw], n)
        names = served.raw_items if side == "item" else served.raw_users
        query = getattr(served, side)(raw)
        return {side: names([query])[0], "items" if side == "item" else "users": names(ids[0]),
                "scores": scores[0][ids[0] >= 0].tolist()}

    return app


def _describe(errors):
    """One sentence from pydantic's validation errors: where and what, for the first few.

    A raw id is a union (integer or string): its two member errors become one.
    """
    parts = {}
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        kind = error.get("type", "")
        if kind == "json_invalid":
            return f"body: malformed JSON at character {loc[-1]} ({error.get('ctx', {}).get('error', 'decode error')})"
        if loc == ["body"] and kind in ("model_attributes_type", "dict_type"):
            return ('body: expected a JSON object like {"items": [...], "n": 20}, sent with '
                    "Content-Type: application/json")
        if loc and loc[-1] in ("int", "str"):  # a member of the raw-id union
            parts[".".join(loc[:-1])] = "expected a raw id, a JSON integer or string"
        else:
            parts.setdefault(".".join(loc) or "request", error.get("msg", "invalid"))
    return "; ".join(f"{where}: {what}" for where, what in list(parts.items())[:3])
