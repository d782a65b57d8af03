r"""One trainer for every neural sequential model (GRU4Rec, SASRec, BERT4Rec).

A model only has to provide ``loss(batch)`` (a scalar for a ``(B, max_len + 1)``
batch of left-padded item IDs) and ``score(users, histories)``
(:class:`course_lib.models.neural.NeuralRecommender`: ``model.fit(split, **options)``
calls :func:`train`); this module does the rest, the same way on a CPU and on a GPU:

* the device is chosen **once** (:func:`course_lib.get_device`: cuda, then mps,
  then cpu) and the model moved there;
* everything is seeded: the model's weights are **re-initialised** from ``seed``
  (:func:`reset_parameters`: the weights a model gets when it is built right after
  ``seed_everything(seed)``, whatever the global RNG did before), ``seed_everything``
  covers dropout and masking, a separate ``torch.Generator`` the shuffling. So two
  calls ``train(Model(...), split, seed=42)`` in one process give identical runs;
  ``reinit=False`` continues from the model's current weights instead (fine-tuning);
* AdamW, gradient clipping, a learning-rate schedule (``schedule``, ``warmup``), bf16
  autocast of the forward pass on CUDA (``amp=True``);
* two ways to cut the data into batches (``batching``): padded windows (below), or
  GRU4Rec's session-parallel lanes (:mod:`course_lib.seqdata`), for recurrent models with
  ``session_parallel_loss``;
* every ``eval_every`` epochs the model is scored on the validation items with the
  course's evaluator (full ranking, seen items excluded) and **early stopping**
  keeps the state with the best validation NDCG@10: after ``patience``
  evaluations without improvement training stops, and the best weights are put
  back into the model;
* a progress bar shows the loss and NDCG@10, and the returned :class:`History`
  holds one row per epoch for the training-curve plots.

Training data: each user's *training* history (what comes before the validation
item), keeping its last ``max_len + 1`` items, left-padded with 0. Causal models
read ``batch[:, :-1]`` and predict ``batch[:, 1:]``.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field, fields, replace

import numpy as np
import pandas as pd
import torch

from .env import get_device, seed_everything
from .metrics import evaluate
from .prep import pad_sequences

METRIC = "NDCG@10"


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10            # early stopping on validation NDCG@10 (evaluations without improvement)
    eval_every: int = 1
    device: str = "auto"          # course_lib.get_device
    amp: bool = True              # bf16 autocast on CUDA only; ignored on CPU
    seed: int = 42
    progress: bool = True         # tqdm.auto bar over epochs, with loss / NDCG in the postfix
    max_batches: int | None = None  # cap batches per epoch (SMOKE mode)
    grad_clip: float | None = 1.0
    reinit: bool = True           # re-initialise the weights from seed first (False: continue training)
    schedule: str = "constant"    # learning rate over the run: "constant", or "linear" / "cosine" decay to 0 at `epochs`
    warmup: float = 0.0           # fraction of the run's steps with a linear warm-up from 0 to lr
    batching: str = "windows"     # "windows" (padded histories) or "session_parallel" (GRU4Rec's lanes)

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1 (evaluations without improvement), got {self.patience}")
        if self.max_batches is not None and self.max_batches < 1:
            raise ValueError(f"max_batches must be None or >= 1, got {self.max_batches}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup is a fraction of the run's steps in [0, 1), got {self.warmup}")
        if self.batching not in BATCHINGS:
            raise ValueError(f"batching must be one of {BATCHINGS}, got {self.batching!r}")


BATCHINGS = ("windows", "session_parallel")


SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(step: int, total: int, schedule: str = "constant", warmup: float = 0.0) -> float:
    """The learning rate's multiplier at optimiser step ``step`` (0-based) of ``total``.

    A linear warm-up over the first ``warmup * total`` steps (from ``1 / n_warmup`` to 1), then
    ``"constant"`` (1), ``"linear"`` (down to 0 at ``total``) or ``"cosine"`` (half a cosine
    down to 0 at ``total``). The schedule is laid over the epoch cap: early stopping may end
    the run before the rate reaches 0.
    """
    n_warm = int(warmup * total)
    if step < n_warm:
        return (step + 1) / n_warm
    if schedule == "constant":
        return 1.0
    t = min((step - n_warm) / max(total - n_warm, 1), 1.0)
    return 1.0 - t if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))


@dataclass
class History:
    """What happened during training: one row per epoch, and the best epoch."""
    rows: list[dict] = field(default_factory=list)  # epoch, loss, seconds, valid_NDCG@10, valid_HR@10
    best_epoch: int = 0
    best_score: float = float("-inf")
    seconds: float = 0.0  # total training time (training and validation)
    device: str = "cpu"

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame indexed by epoch (valid_* is NaN where no evaluation ran)."""
        cols = ["epoch", "loss", "seconds", f"valid_{METRIC}", "valid_HR@10"]
        df = pd.DataFrame(self.rows, columns=cols)
        return df.set_index("epoch")

    @property
    def epochs(self) -> int:
        return len(self.rows)

    @property
    def seconds_per_epoch(self) -> float:
        return float(np.mean([r["seconds"] for r in self.rows])) if self.rows else float("nan")

    def plot(self, axes=None, title: str = ""):
        """Two panels: training loss and validation NDCG@10 per epoch (best epoch marked)."""
        from .plots import training_curves

        fig = training_curves(self.rows, metrics=["loss", f"valid_{METRIC}"], axes=axes, title=title or None)
        axes = fig.axes[:2] if axes is None else axes
        if self.best_epoch:
            axes[1].axvline(self.best_epoch, color="grey", ls="--", lw=1, label=f"best epoch {self.best_epoch}")
            axes[1].legend(loc="lower right")
        return axes

    def __repr__(self) -> str:
        return (f"History({self.epochs} epochs on {self.device}, best epoch {self.best_epoch} "
                f"with valid {METRIC} {self.best_score:.4f}, {self.seconds:.1f} s)")


def training_sequences(split, max_len: int) -> torch.LongTensor:
    """Left-padded training histories, ``(n_rows, max_len + 1)`` int64 on the CPU.

    One row per user whose training history (``split.training_histories()``: what comes
    before the validation item, so no validation or test item leaks in) has at least
    two items (one input, one target); each row keeps the user's **last**
    ``max_len + 1`` training items, in time order, padded with 0 on the left.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    hist = split.training_histories()[1:]  # index 0 is the padding user
    seqs = [h for h in hist if len(h) >= 2]
    if not seqs:
        raise ValueError("no user has two or more training items: nothing to learn from. "
                         "Use a split with longer histories (leave_one_out(df, min_interactions=4)).")
    return torch.from_numpy(pad_sequences(seqs, max_len + 1, side="left"))


def _model_max_len(model) -> int:
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "max_len"):
        raise TypeError(f"{type(model).__name__} needs a .config with max_len (see course_lib/train.py)")
    return int(cfg.max_len)


def reset_parameters(model, seed: int) -> None:
    """Re-initialise ``model``'s weights from ``seed``, on the CPU, without touching the global RNG.

    The result is the model that its constructor builds right after
    ``torch.manual_seed(seed)`` (models with their own ``reset_parameters()`` draw in the
    constructor's order; otherwise every submodule's ``reset_parameters()`` is called in
    order). The weights are drawn on the CPU (the same on every machine), then the model goes
    back to the device it was on; the global torch RNG state is left as it was.
    """
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    model.to("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        if hasattr(model, "reset_parameters"):
            model.reset_parameters()
        else:
            for m in model.modules():
                if m is not model and hasattr(m, "reset_parameters"):
                    m.reset_parameters()
    model.to(device)


def _batches(model, split, cfg: TrainConfig, device, use_amp: bool = False):
    """``(epoch_losses, n_batches)``: ``epoch_losses(epoch)`` yields one loss per optimiser step.

    ``"windows"``: a shuffled pass over :func:`training_sequences`, ``model.loss(batch)``.
    ``"session_parallel"``: :func:`course_lib.seqdata.session_parallel_batches` over the
    training histories (sessions shuffled per epoch), ``model.session_parallel_loss``
    carrying the recurrent state from one step to the next (truncated BPTT, one step).
    """
    max_len = _model_max_len(model)
    gen = torch.Generator().manual_seed(cfg.seed)

    def autocast():  # the forward pass only: backward and the optimiser step run outside autocast
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp)
    if cfg.batching == "windows":
        data = training_sequences(split, max_len)
        n_batches = math.ceil(len(data) / cfg.batch_size)
        if cfg.max_batches is not None:
            n_batches = min(n_batches, cfg.max_batches)

        def epoch_losses(epoch):
            perm = torch.randperm(len(data), generator=gen)
            for b in range(n_batches):
                batch = data[perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]].to(device)
                with autocast():
                    loss = model.loss(batch)
                yield loss

        return epoch_losses, n_batches

    if not hasattr(model, "session_parallel_loss"):
        raise TypeError(f"{type(model).__name__} has no session_parallel_loss(): session-parallel batching needs a "
                        "recurrent model (GRU4Rec); use batching='windows'")
    from .seqdata import as_sessions, count_session_parallel_steps, session_parallel_batches

    sessions = [s[-(max_len + 1):] for s in as_sessions(split.training_histories()[1:])]
    if not sessions:
        raise ValueError("no user has two or more training items: nothing to learn from")
    n_batches = count_session_parallel_steps(sessions, cfg.batch_size)
    if cfg.max_batches is not None:
        n_batches = min(n_batches, cfg.max_batches)

    def epoch_losses(epoch):
        hidden = None
        order = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        steps = session_parallel_batches(sessions, cfg.batch_size, shuffle=True, seed=order)
        for inputs, targets, reset in itertools.islice(steps, n_batches):
            if (targets > 0).any():
                with autocast():
                    loss, hidden = model.session_parallel_loss(inputs, targets, reset, hidden)
                yield loss

    return epoch_losses, n_batches


def train(model, split, config: TrainConfig | None = None, **overrides) -> History:
    """Train ``model`` on ``split.train`` with early stopping on validation NDCG@10.

    ``overrides`` replace fields of ``config`` (``train(model, split, epochs=5, lr=3e-3)``).
    The seed covers everything: the weights are first re-initialised from ``config.seed``
    (unless ``reinit=False``), so the same seed gives the same run in one process or two.
    The model ends with the weights of its best validation epoch. Returns the History.
    """
    if not hasattr(model, "loss") or not hasattr(model, "score"):
        raise TypeError(f"{type(model).__name__} must implement loss(batch) and score(users, histories)")
    cfg = config or TrainConfig()
    if overrides:
        known = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown training option(s) {unknown}; TrainConfig has {sorted(known)}")
        cfg = replace(cfg, **overrides)

    device = get_device(cfg.device)
    seed_everything(cfg.seed)
    if cfg.reinit:
        reset_parameters(model, cfg.seed)
    model.to(device)
    use_amp = bool(cfg.amp) and device.type == "cuda"
    epoch_losses, n_batches = _batches(model, split, cfg, device, use_amp)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, cfg.epochs * n_batches, cfg.schedule, cfg.warmup))

    history = History(device=str(device))
    best_state = None
    bad_evals = 0
    t_start = time.perf_counter()

    from tqdm.auto import tqdm

    bar = tqdm(range(1, cfg.epochs + 1), desc=f"{type(model).__name__} on {device.type}", unit="epoch",
               disable=not cfg.progress)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        total, steps = torch.zeros((), device=device), 0
        for loss in epoch_losses(epoch):
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            total += loss.detach().float()
            steps += 1
        mean_loss = float(total) / max(steps, 1)  # one host synchronisation per epoch, not per batch
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"the mean training loss of epoch {epoch} is {mean_loss}: lower the learning "
                                     "rate (lr) or check the model's loss")
        row = {"epoch": epoch, "loss": mean_loss}

        stop = False
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            m = evaluate(model, split, stage="valid", ks=(10,))
            row[f"valid_{METRIC}"], row["valid_HR@10"] = float(m[METRIC]), float(m["HR@10"])
            if row[f"valid_{METRIC}"] > history.best_score:
                history.best_score, history.best_epoch = row[f"valid_{METRIC}"], epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                bad_evals = 0
            else:
                bad_evals += 1
                stop = bad_evals >= cfg.patience
        else:
            row[f"valid_{METRIC}"], row["valid_HR@10"] = float("nan"), float("nan")
        row["seconds"] = time.perf_counter() - t0
        history.rows.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4f}", ndcg=f"{row[f'valid_{METRIC}']:.4f}",
                        best=f"{history.best_score:.4f}")
        if stop:
            break
    bar.close()

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history.seconds = time.perf_counter() - t_start
    return history


__all__ = ["TrainConfig", "History", "lr_factor", "training_sequences", "reset_parameters", "train"]
