"""The references of exercises that are not library functions themselves (one module per notebook).

Most exercises of the course are graded against library code (``course_lib.metrics.ndcg_at_k``,
``course_lib.models.markov.transition_counts``...). What only serves an exercise, such as the
pieces of notebook 09's hand-built BERT4Rec, lives here, next to nothing else.
"""
