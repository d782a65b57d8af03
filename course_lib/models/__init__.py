"""One file per model family, all behind the interface in :mod:`course_lib.models.base`.

Classic: Popularity, ItemKNN / UserKNN, ContentKNN, ExplicitMF, BPRMF, ALS, Item2Vec.
Sequential: MarkovChain, GRU4Rec, SASRec, BERT4Rec (trained by :func:`course_lib.train.train`).
"""
from .als import ALS, ALSConfig
from .base import Recommender, recommend_topk
from .bert4rec import BERT4Rec, BERT4RecConfig
from .bpr import BPRConfig, BPRMF
from .content import ContentConfig, ContentKNN
from .explicit_mf import ExplicitMF, ExplicitMFConfig
from .gru4rec import GRU4Rec, GRU4RecConfig
from .item2vec import Item2Vec, Item2VecConfig
from .knn import ItemKNN, KNNConfig, UserKNN, UserKNNConfig
from .markov import MarkovChain, MarkovConfig
from .popularity import Popularity
from .sasrec import SASRec, SASRecConfig

__all__ = [
    "Recommender", "recommend_topk", "Popularity",
    "ItemKNN", "UserKNN", "KNNConfig", "UserKNNConfig", "ContentKNN", "ContentConfig",
    "ExplicitMF", "ExplicitMFConfig", "BPRMF", "BPRConfig", "ALS", "ALSConfig", "Item2Vec", "Item2VecConfig",
    "MarkovChain", "MarkovConfig", "GRU4Rec", "GRU4RecConfig", "SASRec", "SASRecConfig", "BERT4Rec", "BERT4RecConfig",
]
