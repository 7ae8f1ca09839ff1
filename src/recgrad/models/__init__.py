"""Embedding recommenders built from recgrad.nn: MF, TwoTower, GMF, MLP, NeuMF, LightGCN, with recommend and save/load.

Every model has forward(users, items)/backward(grad_scores) for training, score(users, items),
score_all(users, items=None), recommend(userid, user_items, N=10, ...) in implicit's convention,
save(path) to .npz and Model.load(path) / load_model(path). Formulas: docs/formulas.md.
"""

from recgrad.models.base import FactorModel, Recommender, load_model
from recgrad.models.embedding import Embedding
from recgrad.models.lightgcn import LightGCN
from recgrad.models.mf import MF
from recgrad.models.ncf import GMF, MLP, NeuMF
from recgrad.models.two_tower import TwoTower

__all__ = ["GMF", "MF", "Embedding", "FactorModel", "LightGCN", "MLP", "NeuMF", "Recommender", "TwoTower", "load_model"]
