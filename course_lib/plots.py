"""Plots the notebooks reuse: the long tail, the matrix, metric bars, training curves.

Every function draws on an ``ax`` you pass (or makes a new figure) and returns the
matplotlib object it drew on, so a notebook can add a title or save the figure, and a
test can read the plotted data back. No function calls ``plt.show()``.

    fig, ax = plt.subplots()
    plots.long_tail(split.item_popularity()[1:], ax=ax)
    plots.metric_bars({"Popularity": res_pop, "Random": res_rand}, ["HR@10", "NDCG@10"])
    plots.training_curves(history)      # [{"epoch": 1, "loss": 0.9, "NDCG@10": 0.03}, ...]
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

COLORS = {"train": "tab:blue", "valid": "tab:orange", "test": "tab:red"}


def _axes(ax, figsize=(6.4, 4.0)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _counts(popularity) -> np.ndarray:
    pop = np.asarray(popularity, dtype=float)
    if pop.ndim != 1 or pop.size == 0:
        raise ValueError(f"popularity must be a non-empty 1-D array of counts per item, got shape {pop.shape}")
    if (pop < 0).any() or not np.isfinite(pop).all():
        raise ValueError("popularity holds counts: they must be finite and >= 0")
    return pop


def top_share(popularity, frac: float = 0.2) -> float:
    r"""Share of all interactions that go to the most popular ``frac`` of the items.

    .. math:: \text{share} = \frac{\sum_{j \le \lceil f\,n \rceil} c_{(j)}}{\sum_j c_j}

    with :math:`c_{(1)} \ge c_{(2)} \ge \dots` the counts sorted in decreasing order.
    Pass counts per item **without** the padding entry (e.g. ``pop[1:]``).
    """
    if not 0 < frac <= 1:
        raise ValueError(f"frac must be in (0, 1], got {frac}")
    pop = np.sort(_counts(popularity))[::-1]
    total = pop.sum()
    if total == 0:
        return 0.0
    n_top = max(1, int(np.ceil(frac * len(pop) - 1e-9)))
    return float(pop[:n_top].sum() / total)


def long_tail(popularity, ax=None, top_frac: float = 0.2, cumulative: bool = True, title: str | None = None):
    """Items ranked by interaction count (log scale), the head shaded, its share written on the plot.

    ``popularity``: interactions per item, padding entry removed (``split.item_popularity()[1:]``).
    With ``cumulative``, a second y axis shows the cumulative share of interactions.
    Returns the main Axes (the twin axis, if any, is ``ax.cumulative_ax``).
    """
    pop = np.sort(_counts(popularity))[::-1]
    ax = _axes(ax)
    ranks = np.arange(1, len(pop) + 1)
    n_top = max(1, int(np.ceil(top_frac * len(pop) - 1e-9)))
    share = top_share(pop, top_frac)
    # log scale cannot show zero counts: plot them at 0.8 so the tail's end stays visible
    shown = np.where(pop > 0, pop, 0.8)
    ax.plot(ranks, shown, color="tab:blue", lw=2, label="interactions per item")
    ax.axvspan(0.5, n_top + 0.5, color="tab:orange", alpha=0.15, lw=0,
               label=f"top {top_frac:.0%} of items")
    ax.set_yscale("log")
    ax.set_xlim(0.5, len(pop) + 0.5)
    ax.set(xlabel="item rank (most popular first)", ylabel="interactions (log scale)",
           title=title or "The long tail of item popularity")
    ax.text(n_top, shown.max(), f"  top {top_frac:.0%} of items:\n  {share:.1%} of all interactions",
            va="top", ha="left", fontsize=10, color="tab:orange", fontweight="bold")
    ax.cumulative_ax = None
    if cumulative:
        twin = ax.twinx()
        total = pop.sum()
        cum = np.cumsum(pop) / total if total > 0 else np.zeros_like(pop)
        twin.plot(ranks, cum, color="tab:green", lw=1.5, ls="--", label="cumulative share")
        twin.set_ylim(0, 1.02)
        twin.set_ylabel("cumulative share of interactions", color="tab:green")
        twin.yaxis.set_major_formatter(_percent())
        ax.cumulative_ax = twin
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="center right", fontsize=9)
    else:
        ax.legend(loc="center right", fontsize=9)
    return ax


def _percent():
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0, decimals=0)


def sort_by_popularity(matrix, padded: bool = True):
    """Rows sorted by activity and columns by popularity (most first); returns (block, row_ids, col_ids).

    ``padded``: drop row 0 and column 0 (the padding user and item) first. The returned IDs
    are the original row/column indices, so ``block[r, c] == matrix[row_ids[r], col_ids[c]]``.
    """
    import scipy.sparse as sp

    m = sp.csr_matrix(matrix)
    rows = np.arange(m.shape[0])
    cols = np.arange(m.shape[1])
    if padded:
        rows, cols = rows[1:], cols[1:]
    binary = (m[rows][:, cols] != 0).astype(np.int32)
    row_order = np.argsort(-np.asarray(binary.sum(1)).ravel(), kind="stable")
    col_order = np.argsort(-np.asarray(binary.sum(0)).ravel(), kind="stable")
    return m[rows[row_order]][:, cols[col_order]], rows[row_order], cols[col_order]


def spy(matrix, ax=None, padded: bool = True, sort: bool = True, max_rows: int | None = None,
        max_cols: int | None = None, title: str | None = None):
    """Show which cells of a (sparse) user-item matrix are observed: black = interaction, white = empty.

    ``sort``: most active users on top, most popular items on the left (else ID order).
    ``max_rows`` / ``max_cols``: show only the first rows/columns (after sorting).
    The title gives the block's size and density. Returns the Axes (the image is ``ax.images[0]``).
    """
    import scipy.sparse as sp

    if not sp.issparse(matrix) and not isinstance(matrix, np.ndarray):
        raise TypeError(f"spy() expects a scipy sparse matrix or a numpy array, got {type(matrix).__name__}")
    if matrix.ndim != 2:
        raise ValueError(f"spy() expects a 2-D matrix, got {matrix.ndim} dimensions")
    if sort:
        block = sort_by_popularity(matrix, padded)[0]
    else:
        block = sp.csr_matrix(matrix)
        if padded:
            block = block[1:, 1:]
    block = block[: max_rows or block.shape[0], : max_cols or block.shape[1]]
    dense = (block.toarray() != 0).astype(np.float32)
    ax = _axes(ax)
    ax.imshow(dense, cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="antialiased")
    order = "sorted by popularity" if sort else "in ID order"
    dens = dense.mean() if dense.size else 0.0
    ax.set(xlabel=f"items ({order})", ylabel=f"users ({'sorted by activity' if sort else 'in ID order'})",
           title=title or f"{dense.shape[0]:,} users x {dense.shape[1]:,} items: {dens:.1%} of cells filled")
    return ax


def metric_bars(results: Mapping[str, Mapping[str, float]], metrics: Sequence[str] = ("HR@10", "NDCG@10"),
                ax=None, annotate: bool = True, title: str | None = None):
    """Grouped bars: one group per metric, one bar per model (``results[model][metric]``).

    ``results`` is what :func:`course_lib.metrics.evaluate` returns, per model:
    ``{"Popularity": {"HR@10": 0.08, ...}, "Random": {...}}``. Values are written on the bars.
    Returns the Axes; ``ax.containers`` holds one bar container per model.
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty dict {model name: {metric: value}}")
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics:
        raise ValueError("give at least one metric to plot")
    for name, res in results.items():
        missing = [m for m in metrics if m not in res]
        if missing:
            raise KeyError(f"model {name!r} has no value for {missing}; it has {sorted(res)}. "
                           "Evaluate it with the matching ks=... or choose other metrics.")
    ax = _axes(ax, figsize=(max(5.0, 1.4 * len(metrics) * max(1, len(results)) ** 0.5 + 2), 3.8))
    n = len(results)
    width = 0.8 / n
    x = np.arange(len(metrics))
    top = 0.0
    for j, (name, res) in enumerate(results.items()):
        vals = [float(res[m]) for m in metrics]
        top = max(top, max(vals))
        bars = ax.bar(x - 0.4 + width * (j + 0.5), vals, width, label=name)
        if annotate:
            ax.bar_label(bars, labels=[f"{v:.3f}" for v in vals], fontsize=8, padding=2)
    ax.set_xticks(x, metrics)
    ax.set_ylim(0, top * 1.18 if top > 0 else 1)
    ax.set(ylabel="score (higher is better)", title=title or "Ranking metrics")
    if n > 1:
        ax.legend(fontsize=9)
    return ax


def training_curves(history: Sequence[Mapping[str, float]], metrics: Sequence | None = None, x: str = "epoch",
                    axes=None, title: str | None = None):
    """One panel per metric over epochs, from a list of dicts ``[{"epoch": 1, "loss": .., "NDCG@10": ..}, ...]``.

    ``metrics``: which keys to draw (default: every numeric key except ``x``); an entry that is
    a tuple, e.g. ``("train_loss", "valid_loss")``, shares one panel. Missing values (a metric
    measured only every few epochs) are skipped. Returns the Figure.
    """
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("history is empty: train for at least one epoch first")
    rows = [dict(h) for h in history]
    if any(x not in r for r in rows):
        raise KeyError(f"every entry of history needs the key {x!r}")
    if metrics is None:
        keys = []
        for r in rows:
            for k, v in r.items():
                if k != x and k not in keys and isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
                    keys.append(k)
        metrics = keys
    panels = [tuple(m) if isinstance(m, (tuple, list)) else (m,) for m in metrics]
    if not panels:
        raise ValueError("history has no numeric metric to plot")
    unknown = [k for p in panels for k in p if all(k not in r for r in rows)]
    if unknown:
        raise KeyError(f"history has no values for {unknown}")
    if axes is None:
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
        axes = axes[0]
    else:
        axes = np.atleast_1d(axes)
        if len(axes) != len(panels):
            raise ValueError(f"got {len(axes)} axes for {len(panels)} panels")
        fig = axes[0].figure
    for ax, keys in zip(axes, panels):
        for k in keys:
            pts = [(r[x], r[k]) for r in rows if k in r and r[k] is not None and np.isfinite(r[k])]
            xs, ys = zip(*pts) if pts else ((), ())
            ax.plot(xs, ys, marker="o", ms=3, label=k)
        ax.set(xlabel=x, ylabel=keys[0] if len(keys) == 1 else "value", title=" / ".join(keys))
        if len(keys) > 1:
            ax.legend(fontsize=9)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def loo_timeline(split, user: int, ax=None, last: int | None = 15, labels: Mapping[int, str] | None = None):
    """One user's interactions in time order, coloured by the part of a leave-one-out split they fell in.

    ``split``: a :class:`course_lib.prep.Split`; ``user``: an encoded user ID; ``last``: show only
    the last few interactions. ``labels``: optional ``{item id: text}`` (e.g. movie titles)
    written under the points. Returns the Axes (one line per part, labelled train/valid/test).
    """
    parts = {"train": split.train, "valid": split.valid, "test": split.test}
    frames = []
    for stage, df in parts.items():
        sub = df[df["user"] == user]
        frames.append(sub.assign(stage=stage))
    import pandas as pd

    events = pd.concat(frames, ignore_index=True)
    if events.empty:
        raise ValueError(f"user {user} has no interactions in this split (IDs are the encoded 1..{split.n_users})")
    order = {"train": 0, "valid": 1, "test": 2}
    keys = ["timestamp", "stage"] if "timestamp" in events.columns else ["stage"]
    events["_o"] = events["stage"].map(order)
    events = events.sort_values(["_o"] + keys[:1], kind="mergesort").reset_index(drop=True)
    if last:
        events = events.iloc[-last:].reset_index(drop=True)
    ax = _axes(ax, figsize=(9, 2.4))
    pos = np.arange(len(events))
    for stage in ("train", "valid", "test"):
        sel = (events["stage"] == stage).to_numpy()
        ax.plot(pos[sel], np.zeros(sel.sum()), "o", ms=11, color=COLORS[stage], label=stage, ls="none")
    for p, item in zip(pos, events["item"].to_numpy()):
        text = labels.get(int(item), str(item)) if labels else str(item)
        ax.annotate(text[:22], (p, 0), xytext=(0, -12), textcoords="offset points", rotation=40,
                    ha="right", va="top", fontsize=7)
    ax.axhline(0, color="grey", lw=0.8, zorder=0)
    ax.set_yticks([])
    ax.set_ylim(-0.8, 0.5)
    ax.set_xlim(-0.8, len(events) - 0.2)
    ax.set_xticks(pos, [""] * len(pos))
    ax.tick_params(axis="x", length=0)
    ax.set_xlabel("time →")
    ax.set_title(f"Leave-one-out for user {user}: last {len(events)} interactions")
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="upper left", ncol=3, fontsize=9, frameon=False)
    return ax
