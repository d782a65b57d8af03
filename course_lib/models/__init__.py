"""One file per model family, all behind the interface in :mod:`course_lib.models.base`.

Classic: Popularity, ItemKNN / UserKNN, ContentKNN, ExplicitMF, BPRMF, ALS, Item2Vec.
Sequential: MarkovChain, GRU4Rec, SASRec, BERT4Rec (trained by :func:`course_lib.train.train`).
"""
from .base import Recommender, recommend_topk
from .bert4rec import BERT4Rec, BERT4RecConfig
from .content import ContentConfig, ContentKNN
from .gru4rec import GRU4Rec, GRU4RecConfig
from .item2vec import Item2Vec, Item2VecConfig
from .knn import ItemKNN, KNNConfig, UserKNN
from .markov import MarkovChain, MarkovConfig
from .mf import ALS, ALSConfig, BPRConfig, BPRMF, ExplicitMF, ExplicitMFConfig
from .popularity import Popularity
from .sasrec import SASRec, SASRecConfig

__all__ = [
    "Recommender", "recommend_topk", "Popularity",
    "ItemKNN", "UserKNN", "KNNConfig", "ContentKNN", "ContentConfig",
    "ExplicitMF", "ExplicitMFConfig", "BPRMF", "BPRConfig", "ALS", "ALSConfig", "Item2Vec", "Item2VecConfig",
    "MarkovChain", "MarkovConfig", "GRU4Rec", "GRU4RecConfig", "SASRec", "SASRecConfig", "BERT4Rec", "BERT4RecConfig",
]
