"""Where does a Transformer recommender look? Attention weights over a user's history.

Plain functions (testable without a browser) and one small widget builder on core
ipywidgets, for lecturers: pick a user and a position in their history, and see how
much that position attends to each earlier item (SASRec) or to every item (BERT4Rec).

    titles = data.item_titles(split, ml.items)       # encoded item ID -> movie title
    w = attention_over_history(model, history, position=-1)          # (len(history),)
    attention_table(model, history, titles, position=-1)             # DataFrame
    fig = plot_attention(model, history, titles, position=-1)
    attention_widget(model, split.history("test"), titles)           # in a notebook

Works with any model that has ``attention_weights(seq) -> (blocks, B, heads, L, L)``
and ``config.max_len`` (:class:`~course_lib.models.sasrec.SASRec`,
:class:`~course_lib.models.bert4rec.BERT4Rec`).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd


def _window(model, history) -> np.ndarray:
    h = np.asarray(history, dtype=np.int64).ravel()
    if h.size == 0:
        raise ValueError("the history is empty: there is nothing to attend to")
    return h[-model.config.max_len:]


def attention_over_history(model, history, position: int = -1, block: int = -1,
                           head: int | None = None) -> np.ndarray:
    """Attention weights of the query at ``position`` over the items of ``history``.

    ``history``: item IDs in time order; only its last ``config.max_len`` items are
    read (the model's window), and ``position`` indexes that window (negative counts
    from the end; -1 is the most recent item). ``block``: which Transformer block
    (-1: the last); ``head``: one head, or ``None`` for the mean over heads.
    Returns a float array as long as the window, summing to 1.
    """
    h = _window(model, history)
    n = len(h)
    if not -n <= position < n:
        raise IndexError(f"position {position} is outside the window of {n} items")
    w = model.attention_weights(h)  # (blocks, 1, heads, n, n)
    n_blocks, n_heads = w.shape[0], w.shape[2]
    if not -n_blocks <= block < n_blocks:
        raise IndexError(f"block {block} out of range: the model has {n_blocks} blocks")
    w = w[block, 0]
    if head is None:
        w = w.mean(0)
    else:
        if not -n_heads <= head < n_heads:
            raise IndexError(f"head {head} out of range: the model has {n_heads} heads")
        w = w[head]
    return w[position % n].numpy().astype(float)


def attention_table(model, history, titles: Sequence[str] | Mapping[int, str] | None = None,
                    position: int = -1, block: int = -1, head: int | None = None) -> pd.DataFrame:
    """One row per item of the window: ``position``, ``item``, ``title``, ``weight``."""
    h = _window(model, history)
    w = attention_over_history(model, h, position, block, head)
    names = [titles[int(i)] if titles is not None else str(int(i)) for i in h]
    return pd.DataFrame({"position": np.arange(len(h)), "item": h, "title": names, "weight": w})


def plot_attention(model, history, titles=None, position: int = -1, block: int = -1,
                   head: int | None = None, ax=None, last: int | None = 25):
    """Horizontal bars: how much the query at ``position`` attends to each item.

    Shows the ``last`` items of the window up to the query (all of them for a
    bidirectional model: items after the query too); the query's bar is red.
    Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    table = attention_table(model, history, titles, position, block, head)
    q = position % len(table)
    causal = getattr(model, "causal", True)
    shown = table.iloc[: q + 1] if causal else table
    if last is not None and len(shown) > last:
        # keep the query in view: the ``last`` rows ending at it (or around it)
        end = q + 1 if causal else min(len(shown), max(q + 1 + last // 2, last))
        shown = shown.iloc[max(0, end - last): end]
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 0.28 * len(shown) + 1.4))
    labels = [f"{p:>2}  {t}" for p, t in zip(shown["position"], shown["title"])]
    colors = ["tab:red" if p == q else "tab:blue" for p in shown["position"]]
    ax.barh(np.arange(len(shown)), shown["weight"], color=colors)
    ax.set_yticks(np.arange(len(shown)), labels, fontsize=8)
    ax.invert_yaxis()  # oldest on top, like reading the history
    which = "mean over heads" if head is None else f"head {head}"
    block_no = block % len(model.blocks) + 1
    ax.set(xlabel="attention weight", ylabel="position in the window  item",
           title=f"Position {q} ({table['title'].iloc[q]}) attends to... (block {block_no}, {which})")
    ax.title.set_fontsize(9)
    ax.figure.tight_layout()
    return ax.figure


def attention_heatmap(model, history, block: int = -1, head: int | None = None, ax=None):
    """The whole (L, L) attention matrix of one block (rows: queries, columns: keys)."""
    import matplotlib.pyplot as plt

    h = _window(model, history)
    w = model.attention_weights(h)[block, 0]
    w = (w.mean(0) if head is None else w[head]).numpy()
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(w, cmap="viridis", vmin=0)
    ax.figure.colorbar(im, ax=ax, fraction=0.046)
    ax.set(title="Attention weights", xlabel="key position (attended to)", ylabel="query position")
    return ax.figure


def _png_output(fig) -> dict:
    """A figure as one notebook output (``display_data`` with ``image/png``), for an Output widget's ``outputs``."""
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    title = fig.axes[0].get_title() if fig.axes else "figure"
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(buf.getvalue()).decode("ascii"), "text/plain": f"<{title}>"}}


def attention_widget(model, histories: Sequence[np.ndarray], titles=None, users: Sequence[int] | None = None):
    """A user dropdown, a position slider and a block selector driving :func:`plot_attention`.

    ``histories``: indexed by user ID (``split.history("test")``); ``users``: which users
    to offer (default: every user with at least 2 items). Returns the widget (core
    ipywidgets only, so it runs on Colab).
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    if users is None:
        users = [u for u in range(len(histories)) if len(histories[u]) >= 2]
    users = [int(u) for u in users]
    if not users:
        raise ValueError("no user with a history of at least 2 items to show")
    n_blocks = len(model.blocks)
    user = widgets.Dropdown(options=users, value=users[0], description="user")
    window = lambda u: min(len(histories[u]), model.config.max_len)  # noqa: E731
    pos = widgets.IntSlider(value=window(users[0]) - 1, min=0, max=window(users[0]) - 1,
                            description="position", continuous_update=False)
    block = widgets.Dropdown(options=list(range(1, n_blocks + 1)), value=n_blocks, description="block")
    out = widgets.Output()

    def redraw(*_):
        # The plot goes into ``out.outputs`` as a PNG, one state update from the kernel, instead of
        # ``with out: display(fig)``: capturing makes a headless executor (nbclient, papermill) send the
        # output back to the kernel while the cell still runs, and that exchange stalls the run now and
        # then (jupyter/nbclient#312). A live front end renders both the same way.
        fig = plot_attention(model, histories[user.value], titles, pos.value, block.value - 1)
        out.outputs = (_png_output(fig),)
        plt.close(fig)

    def on_user(change):
        n = window(change["new"])
        pos.max = n - 1
        if pos.value == n - 1:
            redraw()
        else:
            pos.value = n - 1  # the slider's observer redraws

    user.observe(on_user, names="value")
    pos.observe(redraw, names="value")
    block.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([user, pos, block]), out])
