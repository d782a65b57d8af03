"""Language models as recommenders: the shared toolkit of notebooks 10-17.

* :mod:`~course_lib.llm.models`: load the course's offline models (the MiniLM sentence
  encoder, SmolLM2-135M-Instruct) or a bigger one by name when online; device, dtype and
  threads chosen once.
* :mod:`~course_lib.llm.verbalize`: items, users and interactions as text (MovieLens quirks
  fixed here, once).
* :mod:`~course_lib.llm.encoder`: the LLM as encoder: cached text embeddings, cosine top-k,
  a text k-NN recommender and a two-tower model behind the course's model interface.
* :mod:`~course_lib.llm.scoring`: batched last-token scoring with left padding, and the
  verbalizer probability of answer words from logits.
* :mod:`~course_lib.llm.prompting`: prompt learning (Prompt4NR): templates, MiniLM as a masked
  LM, the click task (notebook 11).
* :mod:`~course_lib.llm.generator`: the LLM as generator: prompts, grounding, constrained
  decoding, the LLM ranker (notebook 12).
* :mod:`~course_lib.llm.tuning`: LoRA tuning for recommendation: TALLRec and P5 (notebook 13).
* :mod:`~course_lib.llm.knowledge`: knowledge injection: lexicalized text, KG and co-occurrence
  facts, one adapter per source (notebook 14).
* :mod:`~course_lib.llm.conductor`: retrieval-augmented recommendation (notebook 15);
  :mod:`~course_lib.llm.dialogue`: the conversational recommender and its user simulators
  (notebook 16); :mod:`~course_lib.llm.judge`: the LLM as a pairwise judge (notebook 17).

Nothing outside ``course_lib.llm`` imports it, and ``transformers`` is imported lazily,
so the rest of the course works without the ``[llm]`` extra.
"""
from .verbalize import clean_title, history_text, interaction_text, item_text, item_texts, user_profile

__all__ = ["clean_title", "item_text", "item_texts", "user_profile", "interaction_text", "history_text"]
