"""Serving a trained model: fold-in of new users, similar items and users, an optional ANN index,
and the HTTP service (`recgrad serve`). docs/serving.md describes all of it.

Nothing here is imported by the training path; FastAPI and faiss are imported only by the modules
that need them (the `serve` and `ann` extras).
"""
