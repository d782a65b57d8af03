"""Prompt learning for recommendation (Prompt4NR, Zhang & Wang, SIGIR 2023) with MiniLM.

Recommendation becomes fill-in-the-blank: a template joins the user's history and one
candidate around a ``[MASK]``, and the language model's preference between two *answer
words* at the mask ("related" / "unrelated") is the click probability.

* :func:`build_click_task`: impressions from MovieLens (per user one clicked item and
  ``n_neg`` items never seen), for disjoint train / validation / test users, in three
  settings: ``"cold"`` (a share of the items is held out of training; test impressions
  are drawn among them), ``"warm_pop"`` (negatives sampled by popularity, closer to real
  impressions) and ``"warm_uniform"`` (uniform negatives, which popularity alone wins).
* :data:`TEMPLATES`: the 12 templates, discrete / continuous (soft prompt tokens) /
  hybrid, for four perspectives (relevance, emotion, action, utility) with their answer
  words; :func:`fill_template` puts a user and a candidate into one.
* :class:`PromptScorer`: MiniLM as a masked LM. MiniLM ships without its MLM head, so the
  head's shape is rebuilt and trained: ``[MASK]`` hidden state -> Linear-GELU-LayerNorm ->
  dot product with the answer words' input embeddings; a softmax over the answer words is
  the verbalizer. ``tuning="full"`` fine-tunes the whole encoder, ``tuning="prompt"``
  trains only the soft prompt tokens and the transform.
* :func:`impression_metrics`: AUC, MRR, NDCG@5 and NDCG@10 per impression (ties counted
  in expectation), :func:`summarize` with bootstrap intervals; :func:`popularity_scores`
  and :func:`history_cosine` are the baselines; :func:`ensemble_by_kind` averages the
  templates of one kind (Prompt4NR's ensembles).

``transformers`` is imported inside :class:`PromptScorer` only.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from .. import metrics
from .scoring import ensemble, verbalizer_probs
from .verbalize import item_texts

MASK = "[MASK]"
USER, CANDIDATE = "<user>", "<candidate>"
SETTINGS = ("cold", "warm_pop", "warm_uniform")
KINDS = ("discrete", "continuous", "hybrid")
PERSPECTIVES = ("relevance", "emotion", "action", "utility")
ANSWERS = {  # (the word for a click, the word for no click)
    "relevance": ("related", "unrelated"),
    "emotion": ("interesting", "boring"),
    "action": ("yes", "no"),
    "utility": ("good", "bad"),
}
_SOFT = re.compile(r"\[P\d+\]")


# ----------------------------------------------------------------------------- templates

@dataclass(frozen=True)
class Template:
    """One prompt: ``text`` holds ``<user>``, ``<candidate>``, one ``[MASK]`` and, for the
    continuous and hybrid kinds, soft prompt tokens ``[P1]``, ``[P2]``, ... (trained vectors,
    not words)."""
    kind: str
    perspective: str
    text: str

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.perspective}"

    @property
    def answers(self) -> tuple[str, str]:
        return ANSWERS[self.perspective]

    @property
    def soft_tokens(self) -> list[str]:
        return list(dict.fromkeys(_SOFT.findall(self.text)))


def _soft(start: int, n: int) -> str:
    return " ".join(f"[P{i}]" for i in range(start, start + n))


def make_templates(n_soft: int = 3) -> dict[str, Template]:
    """The 12 templates (Prompt4NR's, for movies), keyed by ``"<kind>-<perspective>"``.

    ``n_soft`` soft tokens per group: continuous templates have three groups (before the
    user, before the candidate, before the mask), hybrid ones two."""
    if n_soft < 1:
        raise ValueError(f"n_soft must be at least 1, got {n_soft}")
    discrete = {
        "relevance": f"{CANDIDATE} is {MASK} to {USER}",
        "emotion": f"The user feels {MASK} about {CANDIDATE} according to their interest in {USER}",
        "action": f"User: {USER} [SEP] Movie: {CANDIDATE} [SEP] Does the user watch the movie? {MASK}",
        "utility": f"Recommending {CANDIDATE} to the user is a {MASK} choice according to {USER}",
    }
    question = {
        "relevance": f"This movie is {MASK} to the user's area of interest",
        "emotion": f"The user feels {MASK} about the movie",
        "action": f"Does the user watch the movie? {MASK}",
        "utility": f"Recommending the movie to the user is a {MASK} choice",
    }
    p, q, m = _soft(1, n_soft), _soft(n_soft + 1, n_soft), _soft(2 * n_soft + 1, n_soft)
    out = {}
    for persp in PERSPECTIVES:
        out[f"discrete-{persp}"] = Template("discrete", persp, discrete[persp])
        out[f"continuous-{persp}"] = Template("continuous", persp, f"{p} {USER} [SEP] {q} {CANDIDATE} {m} {MASK}")
        out[f"hybrid-{persp}"] = Template("hybrid", persp, f"{p} {USER} [SEP] {q} {CANDIDATE} [SEP] {question[persp]}")
    return {k: out[k] for k in sorted(out, key=lambda n: (KINDS.index(n.split("-")[0]),
                                                            PERSPECTIVES.index(n.split("-")[1])))}


TEMPLATES = make_templates()


def fill_template(template: str | Template, user: str, candidate: str, mask: str = MASK) -> str:
    """The prompt: ``template`` with ``<user>`` and ``<candidate>`` replaced.

    A template must hold exactly one ``mask`` (where the answer word goes) and each slot
    once; otherwise a ValueError says what is missing."""
    text = template.text if isinstance(template, Template) else str(template)
    n = text.count(mask)
    if n != 1:
        raise ValueError(f"the template must contain exactly one {mask} slot for the answer word, found {n}: {text!r}")
    for slot in (USER, CANDIDATE):
        if text.count(slot) != 1:
            raise ValueError(f"the template must contain the slot {slot} exactly once: {text!r}")
    # one pass, so a title that happens to contain "<candidate>" is never substituted again
    return re.sub(f"{re.escape(USER)}|{re.escape(CANDIDATE)}", lambda m: user if m.group() == USER else candidate, text)


# ----------------------------------------------------------------------------- the click task

@dataclass
class ClickTask:
    """Impressions of a click task: one row per (impression, candidate).

    ``impressions`` has columns ``impression, user, stage, item, label`` (raw MovieLens IDs;
    exactly one ``label == 1`` per impression); ``history[impression]`` lists the raw item
    IDs the user watched before the click (oldest first); ``popularity`` counts training
    users' interactions per raw item (zero for cold items)."""
    setting: str
    impressions: pd.DataFrame
    history: dict
    popularity: pd.Series
    titles: pd.Series            # raw item -> "Title (year)", for histories
    texts: pd.Series             # raw item -> "Title (year); genres: ...", for candidates
    cold_items: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def __repr__(self) -> str:
        n = self.impressions.groupby("stage")["impression"].nunique().to_dict()
        return (f"ClickTask({self.setting}: impressions train {n.get('train', 0)}, valid {n.get('valid', 0)}, "
                f"test {n.get('test', 0)}; {len(self.cold_items)} cold items)")

    def frame(self, stage: str) -> pd.DataFrame:
        if stage not in ("train", "valid", "test"):
            raise ValueError(f"stage must be 'train', 'valid' or 'test', got {stage!r}")
        return self.impressions[self.impressions["stage"] == stage].reset_index(drop=True)

    def user_text(self, impression: int, max_items: int | None = None) -> str:
        h = self.history[impression]
        h = h[-max_items:] if max_items else h
        return "; ".join(self.titles.loc[h])

    def prompts(self, template: str | Template, frame: pd.DataFrame, max_items: int | None = None,
                tokenizer=None, max_length: int | None = None) -> list[str]:
        """One filled prompt per row of ``frame`` (a :meth:`frame` slice).

        With a ``tokenizer`` and ``max_length``, the oldest history titles are dropped until
        the prompt fits (so truncation never cuts the ``[MASK]`` or the candidate)."""
        out = []
        for imp, item in zip(frame["impression"], frame["item"]):
            h = self.history[imp][-max_items:] if max_items else self.history[imp]
            while True:
                p = fill_template(template, "; ".join(self.titles.loc[h]), self.texts.loc[item])
                if tokenizer is None or len(h) <= 1 or len(tokenizer.tokenize(p)) + 2 <= max_length:
                    break
                h = h[1:]
            out.append(p)
        return out


def _split_users(users: np.ndarray, n_train: int, n_valid: int, n_test: int | None, rng) -> dict[int, str]:
    users = rng.permutation(users)
    n_test = len(users) - n_train - n_valid if n_test is None else n_test
    if min(n_train, n_valid, n_test) < 0 or n_train + n_valid + n_test > len(users):
        raise ValueError(f"asked for {n_train} + {n_valid} + {n_test} users, {len(users)} exist")
    stages = ["train"] * n_train + ["valid"] * n_valid + ["test"] * n_test
    return dict(zip(users.tolist(), stages))


def _pick_target(seq: np.ndarray, eligible: np.ndarray, in_history: np.ndarray, min_history: int) -> int | None:
    """Index of the last eligible interaction with at least ``min_history`` history items before it."""
    before = np.cumsum(in_history) - in_history
    ok = np.flatnonzero(eligible & (before >= min_history))
    return int(ok[-1]) if len(ok) else None


def _sample_negatives(pool: np.ndarray, weights: np.ndarray | None, seen: set, n: int, rng) -> np.ndarray | None:
    mask = ~np.isin(pool, list(seen))
    cand = pool[mask]
    if weights is not None:
        w = weights[mask].astype(float)
        cand, w = cand[w > 0], w[w > 0]
        if len(cand) < n:
            return None
        return rng.choice(cand, size=n, replace=False, p=w / w.sum())
    if len(cand) < n:
        return None
    return rng.choice(cand, size=n, replace=False)


def build_click_task(interactions: pd.DataFrame, items: pd.DataFrame, setting: str = "cold", n_train: int = 600,
                     n_valid: int = 100, n_test: int | None = 200, n_neg: int = 4, cold_frac: float = 0.2,
                     history_items: int = 10, min_history: int = 3, seed: int = 0) -> ClickTask:
    """Impressions (1 clicked + ``n_neg`` never-seen items per user) for disjoint train / valid / test users.

    * ``"cold"``: ``cold_frac`` of the items are cold: no training impression, history or
      popularity count ever mentions one. A training impression's click is the user's last
      warm item; a validation or test impression's click is the user's last cold item and
      its negatives are cold too, so popularity (and any ID model) ties at AUC 0.5 by
      construction. Histories hold warm items only.
    * ``"warm_pop"``: the click is the user's last item; negatives are sampled in proportion
      to their popularity among training users (popularity then explains little).
    * ``"warm_uniform"``: negatives uniform over the catalog (popularity alone answers well).

    Negatives are never items the user interacted with at any time. Users without enough
    history (or, cold, without a cold item) are skipped; ``n_test=None`` takes the rest."""
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    if not 0 < cold_frac < 1:
        raise ValueError(f"cold_frac must lie strictly between 0 and 1, got {cold_frac}")
    if n_neg < 1 or min_history < 1:
        raise ValueError("n_neg and min_history must be at least 1")
    rng = np.random.default_rng(seed)
    df = interactions.sort_values(["user", "timestamp"], kind="stable")
    catalog = np.sort(items["item"].unique())
    cold = (np.sort(rng.choice(catalog, size=max(1, int(round(cold_frac * len(catalog)))), replace=False))
            if setting == "cold" else np.empty(0, dtype=catalog.dtype))
    warm = np.setdiff1d(catalog, cold)
    stage_of = _split_users(df["user"].unique(), n_train, n_valid, n_test, rng)
    train_users = [u for u, s in stage_of.items() if s == "train"]
    train_df = df[df["user"].isin(train_users) & ~df["item"].isin(cold)]
    pop = train_df["item"].value_counts().reindex(catalog, fill_value=0)
    rows, history = [], {}
    for user, g in df.groupby("user", sort=True):
        stage, seq = stage_of.get(user), g["item"].to_numpy()
        if stage is None:  # a user left out of the requested sizes
            continue
        is_cold = np.isin(seq, cold)
        if setting == "cold":
            eligible = ~is_cold if stage == "train" else is_cold
            t = _pick_target(seq, eligible, ~is_cold, min_history)
            pool = warm if stage == "train" else cold
        else:
            t = _pick_target(seq, np.ones(len(seq), bool), np.ones(len(seq), bool), min_history)
            pool = catalog
        if t is None:
            continue
        weights = pop.reindex(pool).to_numpy() if setting == "warm_pop" else None
        negs = _sample_negatives(pool, weights, set(seq.tolist()), n_neg, rng)
        if negs is None:
            continue
        imp = len(history)
        prior = seq[:t][~is_cold[:t]]
        history[imp] = prior[-history_items:].tolist()
        cands = rng.permutation(np.concatenate([[seq[t]], negs]))
        rows += [(imp, user, stage, int(c), int(c == seq[t])) for c in cands]
    frame = pd.DataFrame(rows, columns=["impression", "user", "stage", "item", "label"])
    titles = item_texts(items, with_genres=False, disambiguate=False)
    texts = item_texts(items, with_genres=True, disambiguate=False)
    return ClickTask(setting, frame, history, pop, titles, texts, cold)


# ----------------------------------------------------------------------------- metrics and baselines

def _expected_rank_metrics(better: int, ties: int, ks: Sequence[int]) -> tuple[float, list[float]]:
    """MRR and NDCG@k of the one positive when ``better`` negatives outscore it and ``ties``
    tie with it, averaged over the random order of the tied items."""
    ranks = np.arange(better + 1, better + ties + 2)
    rr = float(np.mean(1.0 / ranks))
    ndcg = [float(np.mean(np.where(ranks <= k, 1.0 / np.log2(ranks + 1), 0.0))) for k in ks]
    return rr, ndcg


def impression_metrics(frame: pd.DataFrame, scores, ks: Sequence[int] = (5, 10)) -> pd.DataFrame:
    """Per impression: AUC (ties count half), MRR and NDCG@k of the clicked item among the candidates.

    ``frame`` has ``impression`` and ``label`` columns (exactly one positive per impression),
    ``scores`` one number per row, higher = more likely clicked. Ties are counted in
    expectation over a random order, so a constant scorer gets exactly the random baseline."""
    s = np.asarray(scores, dtype=float)
    if len(s) != len(frame):
        raise ValueError(f"{len(s)} scores for {len(frame)} rows")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    out = []
    for imp, idx in frame.groupby("impression", sort=True).indices.items():
        y = frame["label"].to_numpy()[idx].astype(bool)
        if y.sum() != 1 or len(y) < 2:
            raise ValueError(f"impression {imp} needs exactly one clicked item and at least one other")
        pos, neg = s[idx][y][0], s[idx][~y]
        better, ties = int((neg > pos).sum()), int((neg == pos).sum())
        rr, nd = _expected_rank_metrics(better, ties, ks)
        auc = ((neg < pos).sum() + 0.5 * ties) / len(neg)
        out.append({"impression": imp, "auc": float(auc), "mrr": rr, **{f"ndcg{k}": v for k, v in zip(ks, nd)}})
    return pd.DataFrame(out)


def summarize(per_impression: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean of each metric over impressions with a 95% bootstrap interval: ``{"auc": m, "auc_lo": lo, ...}``."""
    out = {}
    for col in [c for c in per_impression.columns if c != "impression"]:
        m, lo, hi = metrics.bootstrap_ci(per_impression[col].to_numpy(), n_boot=n_boot, seed=seed)
        out.update({col: m, f"{col}_lo": lo, f"{col}_hi": hi})
    return out


def popularity_scores(task: ClickTask, frame: pd.DataFrame) -> np.ndarray:
    """Training-users' interaction count of each candidate (0 for a cold item)."""
    return task.popularity.reindex(frame["item"]).fillna(0).to_numpy(float)


def history_cosine(task: ClickTask, frame: pd.DataFrame, vectors: pd.DataFrame) -> np.ndarray:
    """Zero-shot text baseline: cosine between the mean of the history's item vectors and the candidate's.

    ``vectors`` is indexed by raw item ID (for example frozen MiniLM embeddings of the item texts)."""
    v = vectors.to_numpy(np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    pos = pd.Series(np.arange(len(vectors)), index=vectors.index)
    users = {}
    for imp in frame["impression"].unique():
        u = v[pos.loc[task.history[imp]].to_numpy()].mean(0)
        users[imp] = u / max(np.linalg.norm(u), 1e-12)
    cand = v[pos.loc[frame["item"]].to_numpy()]
    return np.array([users[i] @ c for i, c in zip(frame["impression"], cand)])


def ensemble_by_kind(probs: dict[str, np.ndarray], kind: str) -> np.ndarray:
    """Prompt4NR's ensemble: the equal-weight mean of the click probabilities of every template
    of one ``kind`` (``"discrete"``, ``"continuous"`` or ``"hybrid"``) present in ``probs``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    members = [probs[n] for n in sorted(probs) if n.split("-")[0] == kind]
    if not members:
        raise ValueError(f"no {kind} template among {sorted(probs)}")
    return ensemble(members)


# ----------------------------------------------------------------------------- the scorer

@dataclass
class PromptConfig:
    """Hyper-parameters of :class:`PromptScorer` (defaults: Prompt4NR's, at MiniLM's size)."""
    tuning: str = "full"       # "full": encoder + soft tokens + transform; "prompt": soft tokens + transform only
    epochs: int = 2
    batch_size: int = 16
    lr: float = 3e-5           # encoder weights (full tuning)
    head_lr: float = 1e-3      # the transform and the soft tokens (trained from scratch)
    weight_decay: float = 1e-3
    max_length: int = 128      # tokens per prompt; the oldest history titles are dropped to fit
    max_steps: int | None = None
    eval_batch_size: int = 64
    seed: int = 0


class PromptScorer(nn.Module):
    """MiniLM (a 6-layer BERT) as a masked LM scoring one template's answer words.

    ``P(click) = softmax_j( LN(GELU(W h_[MASK] + b)) . e_j )[positive]`` over the template's two
    answer words ``j``, where ``e_j`` are the encoder's (frozen) input embeddings of the words.
    Soft tokens ``[P1]..`` are extra trainable input vectors, initialised from random vocabulary
    embeddings. ``head=False`` in :meth:`predict` skips the transform: the zero-shot reading
    of the raw ``[MASK]`` state."""

    def __init__(self, template: Template, config: PromptConfig | None = None, device: str | torch.device = "cpu",
                 encoder_path=None):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        from .models import _quiet_transformers, encoder_path as default_path
        from .scoring import answer_token_ids
        _quiet_transformers()
        self.template, self.config = template, config or PromptConfig()
        if self.config.tuning not in ("full", "prompt"):
            raise ValueError(f"tuning must be 'full' or 'prompt', got {self.config.tuning!r}")
        fill_template(template, "u", "c")  # the template is valid
        path = encoder_path or default_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.vocab = len(self.tokenizer)
        soft = template.soft_tokens
        if soft:
            self.tokenizer.add_special_tokens({"additional_special_tokens": soft})
        self.answer_ids = answer_token_ids(self.tokenizer, template.answers)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self.encoder = AutoModel.from_pretrained(path)
            d = self.encoder.config.hidden_size
            self.transform = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d, eps=1e-12))
            words = self.encoder.get_input_embeddings().weight
            init = torch.randint(1000, self.vocab, (len(soft),))
            self.soft = nn.Parameter(words[init].detach().clone())
        self.encoder.get_input_embeddings().weight.requires_grad_(False)
        if self.config.tuning == "prompt":
            self.encoder.requires_grad_(False)
        self.device = torch.device(device)
        self.to(self.device)
        self.losses: list[float] = []
        self.train_s = 0.0

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def prompts(self, task: ClickTask, frame: pd.DataFrame, max_items: int | None = None) -> list[str]:
        """``task``'s prompts for ``frame`` in this scorer's template, each fitting ``max_length`` tokens."""
        return task.prompts(self.template, frame, max_items, self.tokenizer, self.config.max_length)

    def _inputs(self, prompts: Sequence[str]) -> dict:
        batch = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self.config.max_length,
                               return_tensors="pt")
        ids = batch["input_ids"]
        if not (ids == self.tokenizer.mask_token_id).any(1).all():
            raise ValueError(f"a prompt lost its {MASK} to truncation at max_length={self.config.max_length}: "
                             "shorten the history or raise max_length")
        return {k: v.to(self.device) for k, v in batch.items()}

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        words = self.encoder.get_input_embeddings()
        is_soft = ids >= self.vocab
        x = words(ids.masked_fill(is_soft, 0))
        if is_soft.any():
            x = torch.where(is_soft[..., None], self.soft[(ids - self.vocab).clamp(min=0)], x)
        return x

    def mask_states(self, prompts: Sequence[str], head: bool = True) -> torch.Tensor:
        """``(N, d)``: the (transformed) hidden state at each prompt's ``[MASK]``."""
        b = self._inputs(prompts)
        out = self.encoder(inputs_embeds=self._embed(b["input_ids"]), attention_mask=b["attention_mask"],
                           token_type_ids=b.get("token_type_ids")).last_hidden_state
        rows, cols = (b["input_ids"] == self.tokenizer.mask_token_id).nonzero(as_tuple=True)
        first = torch.ones_like(rows, dtype=torch.bool)
        first[1:] = rows[1:] != rows[:-1]
        h = out[rows[first], cols[first]]
        return self.transform(h) if head else h

    def vocab_logits(self, prompts: Sequence[str], head: bool = True) -> torch.Tensor:
        """``(N, vocab)``: the MLM-head-shaped scores of every word at the mask."""
        return self.mask_states(prompts, head) @ self.encoder.get_input_embeddings().weight.T

    def answer_logits(self, prompts: Sequence[str], head: bool = True) -> torch.Tensor:
        """``(N, 2)``: scores of (click word, no-click word) at the mask."""
        e = self.encoder.get_input_embeddings().weight[self.answer_ids]
        return self.mask_states(prompts, head) @ e.T

    @torch.no_grad()
    def predict(self, prompts: Sequence[str], head: bool = True, progress: bool = False) -> np.ndarray:
        """P(click word) for each prompt: the verbalizer (softmax over the answer words) at the mask."""
        self.eval()
        out = []
        steps = range(0, len(prompts), self.config.eval_batch_size)
        if progress:
            from tqdm.auto import tqdm
            steps = tqdm(steps, desc=f"scoring {self.template.name}", unit="batch", leave=False)
        for s in steps:
            logits = self.vocab_logits(prompts[s: s + self.config.eval_batch_size], head).float().cpu()
            out.append(verbalizer_probs(logits, self.answer_ids)[:, 0])
        return np.concatenate(out) if out else np.empty(0)

    def _param_groups(self) -> list[dict]:
        c = self.config
        head = [*self.transform.parameters(), self.soft]
        groups = [{"params": [p for p in head if p.requires_grad and p.numel()], "lr": c.head_lr}]
        enc = [p for p in self.encoder.parameters() if p.requires_grad]
        if enc:
            groups.append({"params": enc, "lr": c.lr})
        return groups

    def fit(self, prompts: Sequence[str], labels: Sequence[int], progress: bool = True) -> "PromptScorer":
        """Cross-entropy over the two answer words (click word for label 1), AdamW, shuffled mini-batches."""
        c = self.config
        y = torch.tensor(np.array(labels, dtype=np.int64))
        if len(y) != len(prompts) or len(y) == 0:
            raise ValueError(f"{len(prompts)} prompts and {len(y)} labels: need the same, non-zero number")
        target = 1 - y  # answer index 0 is the click word
        opt = torch.optim.AdamW(self._param_groups(), weight_decay=c.weight_decay)
        gen = torch.Generator().manual_seed(c.seed)
        n_batches = (len(y) + c.batch_size - 1) // c.batch_size
        total = n_batches * c.epochs if c.max_steps is None else min(c.max_steps, n_batches * c.epochs)
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=total, desc=f"{self.template.name} ({c.tuning})", unit="step")
        t0, step = time.perf_counter(), 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)  # dropout draws from the seed
            self.train(c.tuning == "full")
            self.transform.train()
            while step < total:
                for b in torch.randperm(len(y), generator=gen).split(c.batch_size):
                    logits = self.answer_logits([prompts[i] for i in b.tolist()])
                    loss = F.cross_entropy(logits, target[b].to(self.device))
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    self.losses.append(loss.item())
                    step += 1
                    if bar is not None:
                        bar.update(1)
                    if step >= total:
                        break
        if bar is not None:
            bar.close()
        self.train_s = time.perf_counter() - t0
        self.eval()
        return self


def score_task(scorer: PromptScorer, task: ClickTask, stage: str, head: bool = True, max_items: int | None = None,
               progress: bool = False) -> np.ndarray:
    """The scorer's click probability for every row of ``task.frame(stage)``."""
    return scorer.predict(scorer.prompts(task, task.frame(stage), max_items), head=head, progress=progress)


def train_template(task: ClickTask, template: Template | str, config: PromptConfig | None = None,
                   device: str | torch.device = "cpu", max_items: int | None = None, max_train: int | None = None,
                   progress: bool = True) -> PromptScorer:
    """A :class:`PromptScorer` for ``template`` fitted on ``task``'s training impressions
    (the first ``max_train`` impressions when given)."""
    tpl = TEMPLATES[template] if isinstance(template, str) else template
    frame = task.frame("train")
    if max_train is not None:
        frame = frame[frame["impression"].isin(frame["impression"].unique()[:max_train])].reset_index(drop=True)
    scorer = PromptScorer(tpl, config, device=device)
    return scorer.fit(scorer.prompts(task, frame, max_items), frame["label"].to_numpy(), progress=progress)


def evaluate(task: ClickTask, stage: str, scores, n_boot: int = 1000, seed: int = 0) -> dict:
    """:func:`summarize` of :func:`impression_metrics` on ``task.frame(stage)``."""
    return summarize(impression_metrics(task.frame(stage), scores), n_boot=n_boot, seed=seed)


__all__ = ["ANSWERS", "KINDS", "PERSPECTIVES", "SETTINGS", "TEMPLATES", "Template", "make_templates", "fill_template",
           "ClickTask", "build_click_task", "impression_metrics", "summarize", "popularity_scores", "history_cosine",
           "ensemble_by_kind", "PromptConfig", "PromptScorer", "score_task", "train_template", "evaluate"]
