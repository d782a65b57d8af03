r"""Tuning a language model for recommendation with LoRA: TALLRec and P5, small.

Notebook 13 reads this module top to bottom.

1. **Users, not rows, are split** (:func:`split_users`): shots come from training users,
   every choice (epochs, learning rate) is made on validation users, and numbers are
   reported on test users only.
2. **TALLRec data** (Bao et al., RecSys 2023). A user's ratings in time order; a
   *window* of the ``window`` (10) ratings just before a *candidate*; the question "will
   the user like the candidate?" with the answer ``Yes`` when its rating is above
   ``threshold`` (3). The candidate always comes after the whole window in time, so the
   prompt holds no future (:func:`tallrec_example`, :func:`build_tallrec`,
   :func:`tallrec_prompt`). A user with fewer than ``window + 1`` ratings raises a clear
   error (one example) or is skipped and counted (a data set).
3. **P5** (Geng et al., RecSys 2022), small: one text-to-text model, several tasks written
   as templates (next item, rating, like / dislike: :data:`P5_TEMPLATES`,
   :func:`p5_examples`), items written as numbers. How the numbers are assigned matters
   (Hua et al., SIGIR-AP 2023): **sequential** IDs (:func:`sequential_ids`, items
   numbered user by user in order of first appearance) put a user's items on consecutive
   numbers, so "the next item is the last ID + 1" is often right: the ID leaks the answer
   (:func:`last_plus_one_scores` is the leak detector); **random** IDs
   (:func:`random_ids`) do not.
4. **LoRA** (Hu et al., ICLR 2022): the frozen weight :math:`W` plus a trainable low-rank
   update, :math:`W + \frac{\alpha}{r} B A` with :math:`B \in \mathbb{R}^{d \times r}`,
   :math:`A \in \mathbb{R}^{r \times k}`, :math:`r \ll \min(d, k)`; :func:`add_lora` wraps a
   model with peft, :func:`remove_lora` restores the base model, :func:`train_lora` trains on
   (prompt, answer) pairs in micro-batches with gradient accumulation (the loss on the answer
   tokens only) and reports the peak resident memory.
5. **Scores**: :func:`yes_probability` (P(Yes) from the next-token logits, a softmax over
   the ``Yes`` / ``No`` tokens), :func:`candidate_loglik` (P5's next item by likelihood
   over candidates), :func:`auc_ci` and :func:`auc_diff_ci` (bootstrap intervals of an
   AUC, and of a paired AUC difference).
6. **Baselines** on the same examples: priors fit on all training users (item mean rating,
   the user's like-rate in the window, and a logistic combination: :class:`Priors`), and a
   sequential model (SASRec, GRU4Rec) trained on the same shots and scoring the candidate
   after the window (:func:`shots_split`, :func:`sequential_candidate_scores`).

:class:`TallRec` puts 4 and 5 together behind ``fit(examples)`` / ``score(examples)``.
TALLRec is a classifier of a given (user, candidate) pair that reads the user's *ratings*,
so it is not a full-catalog :class:`~course_lib.models.base.Recommender` (scoring the
1,682 items for one user would take minutes on a CPU).
"""
from __future__ import annotations

import resource
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .scoring import answer_token_ids, auc, verbalizer_probs
from .verbalize import clean_title

WINDOW = 10
THRESHOLD = 3.0
ANSWERS = ("Yes", "No")
STAGES = ("train", "valid", "test")

# ============================================================================= 1. users


def split_users(users, valid: float = 0.1, test: float = 0.3, seed: int = 0) -> dict[str, np.ndarray]:
    """Disjoint ``train`` / ``valid`` / ``test`` user arrays (shares ``1 - valid - test``, ``valid``, ``test``).

    A shuffled copy of the unique ``users`` is cut in three; each part is sorted."""
    u = np.unique(np.asarray(users))
    if not (0 <= valid < 1 and 0 < test < 1 and valid + test < 1):
        raise ValueError(f"valid={valid} and test={test} must be shares in [0, 1) summing to less than 1")
    if len(u) < 3:
        raise ValueError(f"{len(u)} users cannot be split three ways")
    u = np.random.default_rng(seed).permutation(u)
    n_test, n_valid = max(1, int(round(test * len(u)))), int(round(valid * len(u)))
    return {"train": np.sort(u[n_test + n_valid:]), "valid": np.sort(u[n_test: n_test + n_valid]),
            "test": np.sort(u[:n_test])}


# ============================================================================= 2. TALLRec data


def tallrec_example(items: Sequence, ratings: Sequence[float], window: int = WINDOW, threshold: float = THRESHOLD,
                    position: int | None = None) -> tuple[list, list[bool], object, int]:
    """One TALLRec example from a user's time-ordered ratings.

    Returns ``(window_items, window_liked, candidate, label)``: the ``window`` items rated
    just before the candidate (oldest first), whether each was liked (rating above
    ``threshold``), the candidate (``items[position]``, default the last one) and its label
    (1 = liked). Raises a ValueError when the user has fewer than ``window + 1`` ratings, or
    when ``position`` leaves fewer than ``window`` ratings before the candidate."""
    items, ratings = list(items), [float(r) for r in ratings]
    if len(items) != len(ratings):
        raise ValueError(f"{len(items)} items but {len(ratings)} ratings")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if len(items) < window + 1:
        raise ValueError(f"the user has {len(items)} ratings; a TALLRec example needs window + 1 = {window + 1} "
                         f"({window} before the candidate, and the candidate): skip this user or use a smaller window")
    pos = len(items) - 1 if position is None else int(position)
    if pos < 0:
        pos += len(items)
    if not window <= pos < len(items):
        raise ValueError(f"position {position} leaves {max(pos, 0)} ratings before the candidate; it must lie in "
                         f"{window}..{len(items) - 1}")
    hist = slice(pos - window, pos)
    return items[hist], [r > threshold for r in ratings[hist]], items[pos], int(ratings[pos] > threshold)


@dataclass
class TallRecData:
    """TALLRec examples, one row per (user, candidate), and the users that were skipped.

    ``examples`` has columns ``user, item, label, rating, history, history_ratings,
    window_end, candidate_time`` (raw MovieLens IDs; ``history`` and ``history_ratings``
    are lists, oldest first; ``window_end`` is the time of the window's last rating).
    ``skipped`` lists the users with fewer than ``window + 1`` ratings."""
    examples: pd.DataFrame
    skipped: list = field(default_factory=list)
    window: int = WINDOW

    def __len__(self) -> int:
        return len(self.examples)

    def __repr__(self) -> str:
        yes = self.examples["label"].mean() if len(self) else float("nan")
        return (f"TallRecData({len(self)} examples, {yes:.0%} liked, window {self.window}; "
                f"{len(self.skipped)} users skipped for having fewer than {self.window + 1} ratings)")

    def sample(self, n: int, seed: int = 0) -> "TallRecData":
        """``n`` examples drawn without replacement (the few-shot training set); all when ``n >= len``."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        idx = np.sort(np.random.default_rng(seed).permutation(len(self))[:n])
        return TallRecData(self.examples.iloc[idx].reset_index(drop=True), list(self.skipped), self.window)


def build_tallrec(interactions: pd.DataFrame, users=None, window: int = WINDOW, threshold: float = THRESHOLD,
                  position: str = "last", seed: int = 0) -> TallRecData:
    """One TALLRec example per user (of ``users``, default all) from ``interactions``
    (columns ``user, item, rating, timestamp``).

    ``position="last"``: the candidate is the user's last rating; ``"random"``: a random
    rating with at least ``window`` before it (drawn with ``seed``). Ratings are sorted by
    time (stable, so equal timestamps keep file order); the window is the ``window``
    ratings just before the candidate, so nothing in a prompt is later than the
    candidate. Users with fewer than ``window + 1`` ratings are skipped and listed in
    :attr:`TallRecData.skipped`."""
    missing = {"user", "item", "rating", "timestamp"} - set(interactions.columns)
    if missing:
        raise ValueError(f"interactions need columns user, item, rating, timestamp; missing {sorted(missing)}")
    if position not in ("last", "random"):
        raise ValueError(f"position must be 'last' or 'random', got {position!r}")
    df = interactions
    if users is not None:
        df = df[df["user"].isin(np.asarray(users))]
    df = df.sort_values(["user", "timestamp"], kind="mergesort")
    rng = np.random.default_rng(seed)
    rows, skipped = [], []
    for user, g in df.groupby("user", sort=True):
        items, ratings, times = g["item"].tolist(), g["rating"].tolist(), g["timestamp"].to_numpy()
        if len(items) < window + 1:
            skipped.append(user)
            continue
        pos = len(items) - 1 if position == "last" else int(rng.integers(window, len(items)))
        hist, _, cand, label = tallrec_example(items, ratings, window, threshold, pos)
        rows.append({"user": user, "item": cand, "label": label, "rating": float(ratings[pos]), "history": hist,
                     "history_ratings": [float(r) for r in ratings[pos - window: pos]],
                     "window_end": int(times[pos - 1]), "candidate_time": int(times[pos])})
    cols = ["user", "item", "label", "rating", "history", "history_ratings", "window_end", "candidate_time"]
    return TallRecData(pd.DataFrame(rows, columns=cols), skipped, window)


INSTRUCTION = ('Given the movies the user liked and disliked, answer whether the user will like the target movie. '
               'Answer "Yes" or "No".')


def tallrec_prompt(liked: Sequence[str], disliked: Sequence[str], candidate: str) -> str:
    """The user turn of a TALLRec prompt (the paper's instruction, input, question), titles cleaned.

    >>> print(tallrec_prompt(["Toy Story"], [], "Usual Suspects, The"))
    Given the movies the user liked and disliked, answer whether the user will like the target movie. Answer "Yes" or "No".
    User liked: "Toy Story"
    User disliked: none
    Will the user like the target movie "The Usual Suspects"?
    """
    def names(ts):
        return ", ".join(f'"{clean_title(t)}"' for t in ts) or "none"
    return (f"{INSTRUCTION}\nUser liked: {names(liked)}\nUser disliked: {names(disliked)}\n"
            f'Will the user like the target movie "{clean_title(candidate)}"?')


def tallrec_prompts(lm, data: TallRecData, titles: Mapping) -> list[str]:
    """Chat-formatted prompts of every example (``titles``: raw item -> title). The assistant's
    answer starts right after the chat template's newline, where the answer tokens are
    ``Yes`` / ``No`` without a leading space."""
    out = []
    for hist, hr, cand in zip(data.examples["history"], data.examples["history_ratings"], data.examples["item"]):
        liked = [titles[i] for i, r in zip(hist, hr) if r > THRESHOLD]
        disliked = [titles[i] for i, r in zip(hist, hr) if r <= THRESHOLD]
        out.append(lm.chat(tallrec_prompt(liked, disliked, titles[cand])))
    return out


def tallrec_answers(data: TallRecData, answers: Sequence[str] = ANSWERS) -> list[str]:
    """The target answer of each example: ``answers[0]`` (``"Yes"``) for a liked candidate, else ``answers[1]``."""
    return [answers[0] if y else answers[1] for y in data.examples["label"]]


# ============================================================================= 3. P5: item IDs and templates


def sequential_ids(interactions: pd.DataFrame) -> pd.Series:
    """P5's sequential indexing: users in ascending order, each user's items in time order; an
    item gets the next free number (1, 2, ...) the first time it appears. Returns raw item -> ID.

    The first user's items become 1, 2, 3, ... in the order they were watched, so a user's
    history and next item often sit on consecutive numbers."""
    df = interactions.sort_values(["user", "timestamp"], kind="mergesort") if "timestamp" in interactions \
        else interactions.sort_values("user", kind="mergesort")
    order = pd.unique(df["item"].to_numpy())
    return pd.Series(np.arange(1, len(order) + 1), index=order, name="id")


def random_ids(items, seed: int = 0) -> pd.Series:
    """Random indexing: the unique ``items`` get a random permutation of 1..n (raw item -> ID)."""
    u = np.unique(np.asarray(items))
    return pd.Series(np.random.default_rng(seed).permutation(len(u)) + 1, index=u, name="id")


def last_plus_one_scores(history_ids: Sequence[int], candidate_ids: Sequence[int]) -> np.ndarray:
    """The leak detector: a candidate scores higher the closer its ID is to (last history ID + 1).

    No model, no data: with random IDs it ranks candidates at random; with sequential IDs it
    finds the next item whenever the numbering put it right after the last one."""
    if len(history_ids) == 0:
        raise ValueError("the history is empty: there is no last ID")
    c = np.asarray(candidate_ids, dtype=float)
    return -np.abs(c - (float(history_ids[-1]) + 1.0))


P5_TEMPLATES = {
    "next": ("User {user} has watched items {history}. Predict the next item the user will watch. "
             "Answer with the item number only."),
    "rating": ("User {user} has watched items {history}. What star rating from 1 to 5 will the user give "
               "item {item}? Answer with one digit."),
    "like": ('User {user} has watched items {history}. Will the user like item {item}? Answer "Yes" or "No".'),
}
"""P5-style templates, one per task (the model reads the task from the words of the prompt)."""


def p5_prompt(task: str, user: int, history_ids: Sequence[int], item: int | None = None) -> str:
    """The user turn of a P5 task (``"next"``, ``"rating"``, ``"like"``) with items written as numbers."""
    if task not in P5_TEMPLATES:
        raise ValueError(f"task must be one of {list(P5_TEMPLATES)}, got {task!r}")
    if len(history_ids) == 0:
        raise ValueError("the history is empty")
    if task != "next" and item is None:
        raise ValueError(f"the {task!r} task needs an item")
    return P5_TEMPLATES[task].format(user=int(user), history=", ".join(str(int(i)) for i in history_ids),
                                     item=None if item is None else int(item))


def p5_examples(interactions: pd.DataFrame, users, ids: pd.Series, tasks: Sequence[str] = ("next", "rating", "like"),
                max_items: int = 10, seed: int = 0) -> pd.DataFrame:
    """P5 training rows (``user, task, prompt, answer``) for ``users``, one per user and task.

    Each user's items in time order, renumbered by ``ids`` (raw item -> ID): ``next`` asks
    for the user's last item after the ``max_items`` before it; ``rating`` and ``like``
    ask about one item drawn from that history (its rating; liked = rating above 3)."""
    rng = np.random.default_rng(seed)
    df = interactions[interactions["user"].isin(np.asarray(users))].sort_values(["user", "timestamp"], kind="mergesort")
    rows = []
    for user, g in df.groupby("user", sort=True):
        seq, ratings = ids.loc[g["item"].to_numpy()].to_numpy(), g["rating"].to_numpy()
        if len(seq) < 3:
            continue
        hist = seq[:-1][-max_items:]
        j = int(rng.integers(len(seq) - 1 - len(hist), len(seq) - 1))  # an item of the history shown
        for task in tasks:
            if task == "next":
                rows.append((user, task, p5_prompt(task, user, hist), str(int(seq[-1]))))
            elif task == "rating":
                rows.append((user, task, p5_prompt(task, user, hist, seq[j]), str(int(round(ratings[j])))))
            else:
                rows.append((user, task, p5_prompt(task, user, hist, seq[j]), ANSWERS[0] if ratings[j] > THRESHOLD
                             else ANSWERS[1]))
    return pd.DataFrame(rows, columns=["user", "task", "prompt", "answer"])


def next_item_candidates(interactions: pd.DataFrame, users, n_negatives: int = 19, max_items: int = 10,
                         seed: int = 0) -> pd.DataFrame:
    """Next-item test cases (``user, history, target, candidates``, raw IDs) for ``users``.

    The target is the user's last item, the history the ``max_items`` before it; the
    candidates are the target and ``n_negatives`` items the user never rated, in random
    order. Raw IDs, so the same cases serve every indexing."""
    rng = np.random.default_rng(seed)
    catalog = np.unique(interactions["item"].to_numpy())
    df = interactions[interactions["user"].isin(np.asarray(users))].sort_values(["user", "timestamp"], kind="mergesort")
    rows = []
    for user, g in df.groupby("user", sort=True):
        seq = g["item"].to_numpy()
        if len(seq) < 2:
            continue
        pool = np.setdiff1d(catalog, seq)
        if len(pool) < n_negatives:
            raise ValueError(f"user {user} has rated all but {len(pool)} items: fewer than n_negatives={n_negatives}")
        cands = rng.permutation(np.concatenate([[seq[-1]], rng.choice(pool, n_negatives, replace=False)]))
        rows.append((user, seq[:-1][-max_items:].tolist(), int(seq[-1]), cands.tolist()))
    return pd.DataFrame(rows, columns=["user", "history", "target", "candidates"])


def hit_rate(scores: Sequence[Sequence[float]], candidates: Sequence[Sequence], targets: Sequence, k: int = 10,
             seed: int = 0) -> np.ndarray:
    """Per case 1.0 when the target is among the ``k`` best-scored candidates (ties broken at random)."""
    rng = np.random.default_rng(seed)
    out = []
    for s, c, t in zip(scores, candidates, targets):
        s, c = np.asarray(s, dtype=float), list(c)
        if len(s) != len(c):
            raise ValueError(f"{len(s)} scores for {len(c)} candidates")
        order = np.lexsort((rng.random(len(s)), -s))     # best first, random among ties
        out.append(float(c.index(t) in order[:k]))
    return np.asarray(out)


# ============================================================================= 4. LoRA


@dataclass
class LoraSettings:
    """LoRA and training settings (the defaults: TALLRec's recipe scaled to a small CPU).

    The effective batch is ``micro_batch * accumulation``; only ``micro_batch`` examples are
    in memory at a time. ``gradient_checkpointing`` recomputes activations in the backward
    pass (less memory, about a third slower)."""
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: tuple = ("q_proj", "v_proj")
    lr: float = 3e-4
    epochs: int = 2
    micro_batch: int = 2
    accumulation: int = 4
    weight_decay: float = 0.0
    max_length: int = 512
    gradient_checkpointing: bool = False
    seed: int = 0

    def __post_init__(self):
        if min(self.r, self.alpha, self.epochs, self.micro_batch, self.accumulation) < 1:
            raise ValueError("r, alpha, epochs, micro_batch and accumulation must be >= 1")
        if not 0 <= self.dropout < 1 or self.lr <= 0:
            raise ValueError(f"dropout must lie in [0, 1) and lr be positive, got {self.dropout}, {self.lr}")


def add_lora(model, settings: LoraSettings | None = None):
    """Wrap ``model`` with fresh LoRA adapters (peft): only the ``A``, ``B`` matrices train.

    The adapters' ``B`` starts at zero, so the wrapped model first computes exactly what
    the base model does. Undo with :func:`remove_lora`."""
    from peft import LoraConfig, get_peft_model
    s = settings or LoraSettings()
    if hasattr(model, "peft_config"):
        raise ValueError("the model already carries LoRA adapters: call remove_lora(model) first")
    torch.manual_seed(s.seed)
    cfg = LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=list(s.targets),
                     task_type="CAUSAL_LM", bias="none")
    with warnings.catch_warnings():   # peft calls a transformers property that transformers 5 deprecates
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, cfg)


def remove_lora(peft_model):
    """The base model with the adapters removed (peft's ``unload()``): its weights as before tuning."""
    base = peft_model.unload()
    if getattr(base.config, "use_cache", None) is False:
        base.config.use_cache = True
    return base


def trainable_parameters(model) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, in MB (``getrusage``)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def answer_batch(tokenizer, prompts: Sequence[str], answers: Sequence[str], max_length: int = 512):
    """Left-padded ``input_ids``, ``attention_mask`` and the answer targets of a micro-batch.

    Each row is the prompt's tokens followed by the answer's, padded on the left, so every
    answer ends at the last column. Returns ``(ids, mask, targets, width)``: ``targets``
    is ``(B, width)`` with the answer tokens right-aligned and -100 elsewhere, ``width`` the
    longest answer. A prompt longer than ``max_length`` loses its oldest tokens."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows, targets = [], []
    for p, a in zip(prompts, answers):
        p_ids = tokenizer.encode(p, add_special_tokens=False)
        a_ids = tokenizer.encode(a, add_special_tokens=False)
        if not a_ids:
            raise ValueError(f"the answer {a!r} has no tokens")
        keep = max(max_length - len(a_ids), 1)
        rows.append(p_ids[-keep:] + a_ids)
        targets.append(a_ids)
    n, width = max(map(len, rows)), max(map(len, targets))
    ids = torch.full((len(rows), n), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    tgt = torch.full((len(rows), width), -100, dtype=torch.long)
    for r, (q, t) in enumerate(zip(rows, targets)):
        ids[r, n - len(q):] = torch.tensor(q)
        mask[r, n - len(q):] = 1
        tgt[r, width - len(t):] = torch.tensor(t)
    return ids, mask, tgt, width


def answer_loss(model, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor, width: int) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens (the prompt's tokens are not trained on).

    Only the last ``width + 1`` positions' logits are computed (``logits_to_keep``): the
    vocabulary projection of a long prompt is most of the memory a CPU step needs."""
    out = model(input_ids=ids, attention_mask=mask, logits_to_keep=width + 1)
    logits = out.logits[:, -(width + 1):-1].float()          # position t predicts token t + 1
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             ignore_index=-100)


@dataclass
class TuneResult:
    """What :func:`train_lora` did: losses per optimizer step, time, memory, parameter counts."""
    losses: list
    seconds: float
    peak_rss_mb: float
    trainable: int
    total: int
    steps: int

    def __repr__(self) -> str:
        return (f"TuneResult({self.steps} steps in {self.seconds:.0f} s, final loss {np.mean(self.losses[-3:]):.3f}, "
                f"peak RSS {self.peak_rss_mb:.0f} MB, {self.trainable:,} of {self.total:,} parameters trained)")


def train_lora(model, tokenizer, prompts: Sequence[str], answers: Sequence[str], settings: LoraSettings | None = None,
               progress: bool = True, device=None, on_epoch_end: Callable[[int], None] | None = None) -> TuneResult:
    """Train ``model``'s trainable (LoRA) parameters on (prompt, answer) pairs.

    AdamW; each epoch visits the pairs in a new seeded order, ``micro_batch`` at a time,
    and takes one optimizer step every ``accumulation`` micro-batches (the losses scaled so
    the step follows the mean over the effective batch). ``on_epoch_end(epoch)`` (1-based) is
    called after each epoch with the model in eval mode (e.g. to score validation users).
    The model is left in eval mode."""
    s = settings or LoraSettings()
    if len(prompts) != len(answers) or not prompts:
        raise ValueError(f"need as many answers as prompts, at least one: got {len(prompts)} and {len(answers)}")
    device = device or next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters: wrap it with add_lora(model) first")
    if s.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    gen = torch.Generator().manual_seed(s.seed)
    torch.manual_seed(s.seed)                      # LoRA dropout
    n, mb = len(prompts), s.micro_batch
    micro = [list(range(i, min(i + mb, n))) for i in range(0, n, mb)]
    steps_per_epoch = -(-len(micro) // s.accumulation)
    from tqdm.auto import tqdm
    bar = tqdm(total=steps_per_epoch * s.epochs, desc=f"LoRA r={s.r} on {n} examples", unit="step",
               disable=not progress)
    losses, t0 = [], time.perf_counter()
    model.train()
    for epoch in range(1, s.epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen).tolist()
        for start in range(0, len(micro), s.accumulation):
            group = micro[start: start + s.accumulation]
            total = sum(len(g) for g in group)
            opt.zero_grad(set_to_none=True)
            step_loss = 0.0
            for g in group:
                rows = [perm[i] for i in g]
                ids, mask, tgt, width = answer_batch(tokenizer, [prompts[i] for i in rows],
                                                     [answers[i] for i in rows], s.max_length)
                loss = answer_loss(model, ids.to(device), mask.to(device), tgt.to(device), width)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"the loss is {loss.item()}: lower the learning rate")
                (loss * len(g) / total).backward()
                step_loss += loss.item() * len(g) / total
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(step_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}")
        if on_epoch_end is not None:
            model.eval()
            with torch.no_grad():
                on_epoch_end(epoch)
    bar.close()
    if s.gradient_checkpointing:
        model.gradient_checkpointing_disable()
    model.eval()
    trainable, total_params = trainable_parameters(model)
    return TuneResult(losses, time.perf_counter() - t0, peak_rss_mb(), trainable, total_params, len(losses))


# ============================================================================= 5. scores


def yes_probability(lm, prompts: Sequence[str], batch_size: int = 4, answers: Sequence[str] = ANSWERS) -> np.ndarray:
    """P(Yes) of each chat-formatted prompt: the next-token logits (left padded, position -1,
    :func:`~course_lib.llm.generator.next_token_logits`) through a softmax over the ``Yes`` and
    ``No`` tokens only."""
    from .generator import next_token_logits
    ids = answer_token_ids(lm.tokenizer, answers)
    return verbalizer_probs(next_token_logits(lm, list(prompts), batch_size=batch_size), ids)[:, 0]


def candidate_loglik(lm, prompt: str, candidates: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """Mean log-probability per token of each candidate as the answer to ``prompt`` (key-value
    cache shared: :func:`~course_lib.llm.generator.title_loglik`)."""
    from .generator import title_loglik
    return title_loglik(lm, prompt, [str(c) for c in candidates], batch_size=batch_size)


def _auc_fast(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC by ranks (ties get their average rank, i.e. count half): equal to :func:`auc`, in O(n log n)."""
    r = pd.Series(s).rank(method="average").to_numpy()
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_ci(labels, scores, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """AUC and its percentile bootstrap interval (examples resampled with replacement)."""
    y, s = np.asarray(labels).astype(bool), np.asarray(scores, dtype=float)
    point = auc(y, s)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if 0 < y[i].sum() < len(i):
            boots.append(_auc_fast(y[i], s[i]))
    return point, float(np.quantile(boots, alpha / 2)), float(np.quantile(boots, 1 - alpha / 2))


def auc_diff_ci(labels, scores_a, scores_b, n_boot: int = 1000, alpha: float = 0.05,
                seed: int = 0) -> tuple[float, float, float]:
    """AUC(a) - AUC(b) on the same examples, with a paired bootstrap interval."""
    y = np.asarray(labels).astype(bool)
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    point = auc(y, a) - auc(y, b)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if 0 < y[i].sum() < len(i):
            boots.append(_auc_fast(y[i], a[i]) - _auc_fast(y[i], b[i]))
    return point, float(np.quantile(boots, alpha / 2)), float(np.quantile(boots, 1 - alpha / 2))


# ============================================================================= 6. baselines


@dataclass
class Priors:
    """Scores that need no language model, fit on all training users' ratings.

    * ``item_mean``: the candidate's mean rating among training users (shrunk toward the
      global mean by ``shrink`` pseudo-ratings; an unseen item gets the global mean);
    * ``user_rate``: the share of liked ratings in the example's own window (shrunk the
      same way toward the global like-rate): the user's mood, no future used;
    * ``combined``: a logistic regression on the two, fit on training users' examples."""
    item_mean: pd.Series
    global_mean: float
    like_rate: float
    shrink: float = 5.0
    coef: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @classmethod
    def fit(cls, ratings: pd.DataFrame, train_examples: TallRecData | None = None, shrink: float = 5.0) -> "Priors":
        """``ratings``: the training users' ratings (``item, rating``); ``train_examples``: their
        TALLRec examples, on which the combination's weights are fit (skipped when None)."""
        g = ratings.groupby("item")["rating"]
        mu = float(ratings["rating"].mean())
        item_mean = (g.sum() + shrink * mu) / (g.count() + shrink)
        p = cls(item_mean, mu, float((ratings["rating"] > THRESHOLD).mean()), shrink)
        if train_examples is not None and len(train_examples):
            x = p.features(train_examples)
            p.coef = _logistic(x, train_examples.examples["label"].to_numpy())
        return p

    def features(self, data: TallRecData) -> np.ndarray:
        ex = data.examples
        item = ex["item"].map(self.item_mean).fillna(self.global_mean).to_numpy(dtype=float)
        likes = np.array([sum(r > THRESHOLD for r in hr) for hr in ex["history_ratings"]], dtype=float)
        n = np.array([len(hr) for hr in ex["history_ratings"]], dtype=float)
        rate = (likes + self.shrink * self.like_rate) / (n + self.shrink)
        return np.column_stack([item, rate])

    def scores(self, data: TallRecData) -> dict[str, np.ndarray]:
        """``{"item_mean": ..., "user_rate": ..., "combined": ...}``, one score per example."""
        x = self.features(data)
        return {"item_mean": x[:, 0], "user_rate": x[:, 1],
                "combined": 1 / (1 + np.exp(-(self.coef[0] + x @ self.coef[1:])))}


def _logistic(x: np.ndarray, y: np.ndarray, iters: int = 50, l2: float = 1e-3) -> np.ndarray:
    """Intercept and weights of a logistic regression (Newton's method, a little L2)."""
    X = np.column_stack([np.ones(len(x)), x])
    w = np.zeros(X.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-X @ w))
        grad = X.T @ (p - y) + l2 * w
        hess = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def shots_split(shots: TallRecData, catalog):
    """A :class:`~course_lib.prep.Split` that holds the shots only, for the course's sequential
    models: ``train`` = each shot's window (in time order), ``valid`` = its candidate (early
    stopping on next-item NDCG@10), no test part. ``catalog``: every raw item ID, so the model
    can score any candidate."""
    from ..prep import IdMap, Split
    item_map = IdMap(np.unique(np.asarray(catalog)))
    user_map = IdMap(np.asarray(shots.examples["user"]))
    rows, valid = [], []
    for u, hist, cand in zip(shots.examples["user"], shots.examples["history"], shots.examples["item"]):
        uid = int(user_map.encode([u])[0])
        rows += [(uid, int(i), t) for t, i in enumerate(item_map.encode(hist))]
        valid.append((uid, int(item_map.encode([cand])[0]), len(hist)))
    cols = ["user", "item", "timestamp"]
    empty = pd.DataFrame({c: pd.Series(dtype="int64") for c in cols})
    return Split(pd.DataFrame(rows, columns=cols), pd.DataFrame(valid, columns=cols), empty, len(user_map),
                 len(item_map), user_map, item_map, kind="TALLRec shots")


def sequential_candidate_scores(model, data: TallRecData, item_map, batch_size: int = 256) -> np.ndarray:
    """A sequential model's score of each example's candidate right after its window."""
    hists = [item_map.encode(h) for h in data.examples["history"]]
    cands = item_map.encode(data.examples["item"].to_numpy())
    out = []
    with torch.no_grad():
        for s in range(0, len(hists), batch_size):
            sc = torch.as_tensor(model.score(np.zeros(len(hists[s: s + batch_size]), dtype=np.int64),
                                             hists[s: s + batch_size])).float().cpu()
            out.append(sc[torch.arange(sc.shape[0]), torch.as_tensor(cands[s: s + batch_size])].numpy())
    return np.concatenate(out)


# ============================================================================= TALLRec behind fit / score


class TallRec:
    """TALLRec on a causal LM: ``fit(shots)`` trains fresh LoRA adapters on the shots' prompts,
    ``score(examples)`` returns P(Yes) per example, ``unload()`` restores the base model.

    ``titles``: raw item -> title. Before ``fit`` (or after ``unload``) ``score`` is the
    zero-shot model. With ``valid`` examples (validation users), ``fit`` scores them after
    every epoch and keeps the adapters of the epoch with the best validation AUC
    (``valid_auc_``, ``best_epoch_``): the number of epochs is chosen on validation users."""

    def __init__(self, lm, titles: Mapping, settings: LoraSettings | None = None, batch_size: int = 4,
                 answers: Sequence[str] = ANSWERS):
        self.lm, self.titles, self.settings, self.batch_size = lm, titles, settings or LoraSettings(), batch_size
        self.answers = tuple(answers)
        self.result_: TuneResult | None = None
        self.valid_auc_: list = []
        self.best_epoch_: int = 0
        self._peft = None

    def prompts(self, data: TallRecData) -> list[str]:
        return tallrec_prompts(self.lm, data, self.titles)

    def fit(self, shots: TallRecData, valid: TallRecData | None = None, progress: bool = True) -> "TallRec":
        if self._peft is not None:
            self.unload()
        labels = None if valid is None else valid.examples["label"].to_numpy()
        if labels is not None and len(set(labels.tolist())) < 2:
            raise ValueError(f"the {len(labels)} validation examples all have label {labels[0]}: an AUC needs both "
                             "liked and disliked candidates; use more validation users")
        self.valid_auc_, self.best_epoch_, best = [], self.settings.epochs, None
        self._peft = add_lora(self.lm.model, self.settings)

        def check(epoch: int) -> None:
            nonlocal best
            self.valid_auc_.append(auc(labels, self.score(valid)))
            if self.valid_auc_[-1] >= max(self.valid_auc_):
                self.best_epoch_ = epoch
                best = {k: v.detach().clone() for k, v in self._peft.named_parameters() if v.requires_grad}

        answers = tallrec_answers(shots, self.answers)
        self.result_ = train_lora(self._peft, self.lm.tokenizer, self.prompts(shots), answers, self.settings,
                                  progress=progress, device=self.lm.device,
                                  on_epoch_end=None if valid is None else check)
        if best is not None:
            with torch.no_grad():
                for k, v in self._peft.named_parameters():
                    if k in best:
                        v.copy_(best[k])
        return self

    def score(self, data: TallRecData) -> np.ndarray:
        from .models import LM
        lm = self.lm if self._peft is None else LM(self._peft.get_base_model(), self.lm.tokenizer, self.lm.device,
                                                    self.lm.name)
        return yes_probability(lm, self.prompts(data), self.batch_size, self.answers)

    def unload(self) -> None:
        """Remove the adapters: ``lm.model`` is the untouched base model again."""
        if self._peft is not None:
            self.lm.model = remove_lora(self._peft)
            self._peft = None


__all__ = ["WINDOW", "THRESHOLD", "ANSWERS", "split_users", "tallrec_example", "TallRecData", "build_tallrec",
           "tallrec_prompt", "tallrec_prompts", "tallrec_answers", "sequential_ids", "random_ids",
           "last_plus_one_scores", "P5_TEMPLATES", "p5_prompt", "p5_examples", "next_item_candidates", "hit_rate",
           "LoraSettings", "add_lora", "remove_lora", "trainable_parameters", "peak_rss_mb", "answer_batch",
           "answer_loss", "TuneResult", "train_lora", "yes_probability", "candidate_loglik", "auc_ci", "auc_diff_ci",
           "Priors", "shots_split", "sequential_candidate_scores", "TallRec"]
