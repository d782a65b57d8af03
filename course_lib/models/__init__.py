"""One file per model family, all behind the interface in :mod:`course_lib.models.base`."""
from .base import Recommender, recommend_topk
from .content import ContentConfig, ContentKNN
from .gru4rec import GRU4Rec, GRU4RecConfig
from .knn import ItemKNN, KNNConfig, UserKNN
from .markov import MarkovChain, MarkovConfig
from .popularity import Popularity

__all__ = ["Recommender", "recommend_topk", "Popularity", "ItemKNN", "UserKNN", "KNNConfig",
           "ContentKNN", "ContentConfig", "MarkovChain", "MarkovConfig", "GRU4Rec", "GRU4RecConfig"]
