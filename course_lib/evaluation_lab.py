"""Former home of notebooks 08 and 09's references; everything now lives where it belongs.

* :mod:`course_lib.metrics`: ``tie_rank``, ``sampled_hit_probability``,
  ``expected_sampled_metrics``, ``paired_bootstrap``;
* :mod:`course_lib.data`: ``synthetic_sequences``;
* :mod:`course_lib.exercises.lab09`: the pieces of notebook 09's BERT4Rec.
"""
from .data import synthetic_sequences
from .exercises.lab09 import (cloze_mask, embed_sequence, mask_appended_inputs, masked_cross_entropy,
                              ndcg_from_scores, train_masked_epoch)
from .metrics import expected_sampled_metrics, paired_bootstrap, sampled_hit_probability, tie_rank

__all__ = ["tie_rank", "sampled_hit_probability", "expected_sampled_metrics", "paired_bootstrap",
           "synthetic_sequences", "embed_sequence", "cloze_mask", "masked_cross_entropy", "train_masked_epoch",
           "mask_appended_inputs", "ndcg_from_scores"]
