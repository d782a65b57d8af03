"""One file per model family, all behind the interface in :mod:`course_lib.models.base`."""
from .base import Recommender, recommend_topk
from .popularity import Popularity

__all__ = ["Recommender", "recommend_topk", "Popularity"]
