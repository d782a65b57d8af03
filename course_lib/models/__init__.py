"""One file per model family, all behind the interface in :mod:`course_lib.models.base`."""
from .base import Recommender, recommend_topk
from .content import ContentConfig, ContentKNN
from .knn import ItemKNN, KNNConfig, UserKNN
from .popularity import Popularity

__all__ = ["Recommender", "recommend_topk", "Popularity", "ItemKNN", "UserKNN", "KNNConfig",
           "ContentKNN", "ContentConfig"]
