"""The attention demo: weights over a history, the table, the figure and the widget, without a browser."""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch

from course_lib import data, prep
from course_lib.demos import attention as demo
from course_lib.models.bert4rec import BERT4Rec, BERT4RecConfig
from course_lib.models.sasrec import SASRec, SASRecConfig


def model(cls=SASRec, cfg=SASRecConfig, max_len=6):
    torch.manual_seed(0)
    return cls(12, cfg(max_len=max_len, hidden=16, n_blocks=2, n_heads=2, dropout=0.0))


def test_weights_match_the_model_and_respect_causality():
    m = model()
    hist = np.array([3, 1, 4, 1, 5, 9, 2, 6])  # longer than max_len: the last 6 are the window
    w = demo.attention_over_history(m, hist, position=2, block=-1, head=None)
    full = m.attention_weights(hist[-6:])[1, 0].mean(0)[2].numpy()
    assert w.shape == (6,) and np.allclose(w, full, atol=1e-6)
    assert np.isclose(w.sum(), 1.0) and np.allclose(w[3:], 0.0), "a causal model never looks ahead"
    w_head = demo.attention_over_history(m, hist, position=-1, block=0, head=1)
    assert np.allclose(w_head, m.attention_weights(hist[-6:])[0, 0, 1, 5].numpy(), atol=1e-6)
    with pytest.raises(IndexError):
        demo.attention_over_history(m, hist, position=6)
    with pytest.raises(IndexError):
        demo.attention_over_history(m, hist, head=2)
    with pytest.raises(ValueError, match="empty"):
        demo.attention_over_history(m, np.array([], dtype=int))


def test_bidirectional_model_looks_both_ways():
    m = model(BERT4Rec, BERT4RecConfig)
    w = demo.attention_over_history(m, np.array([3, 1, 4, 1, 5]), position=1)
    assert (w[2:] > 0).all() and np.isclose(w.sum(), 1.0)


def test_table_and_titles():
    df = pd.DataFrame({"user": [1, 1, 1, 2, 2, 2], "item": [30, 10, 20, 10, 20, 30], "timestamp": range(6)})
    split = prep.leave_one_out(df)
    items = pd.DataFrame({"item": [10, 20, 30], "title": ["Alpha", "Beta", "A very long title indeed"]})
    titles = data.item_titles(split, items, width=10)
    assert titles.tolist() == ["[pad]", "Alpha", "Beta", "A very lo…"]
    m = model()
    t = demo.attention_table(m, np.array([1, 2, 3]), titles, position=-1)
    assert list(t.columns) == ["position", "item", "title", "weight"]
    assert t["title"].tolist() == ["Alpha", "Beta", "A very lo…"] and np.isclose(t["weight"].sum(), 1.0)
    with pytest.raises(ValueError, match="title"):
        data.item_titles(split, items.rename(columns={"title": "name"}))


def test_plot_and_widget():
    import matplotlib.pyplot as plt

    m = model()
    hist = np.arange(1, 9)
    fig = demo.plot_attention(m, hist, None, position=3)
    ax = fig.axes[0]
    widths = [p.get_width() for p in ax.patches]
    assert len(widths) == 4, "a causal query shows the items up to itself"
    assert np.allclose(widths, demo.attention_over_history(m, hist, 3)[:4])
    plt.close(fig)
    fig = demo.attention_heatmap(m, hist)
    assert fig.axes[0].images[0].get_array().shape == (6, 6)
    plt.close(fig)
    histories = [np.zeros(0, dtype=int), np.arange(1, 9), np.array([4, 5, 6])]
    w = demo.attention_widget(m, histories)
    user, pos, block = w.children[0].children
    assert user.options == (1, 2) and pos.max == 5 and block.value == 2
    user.value = 2
    assert pos.max == 2 and pos.value == 2
    plt.close("all")


def test_widget_plot_is_a_state_update_not_a_captured_display():
    """The widget's plot lands in the Output widget's ``outputs`` as one PNG (a kernel-side state update).
    Capturing with ``with out: display(fig)`` made headless runs (papermill, nbclient) stall now and then."""
    import base64

    import matplotlib.pyplot as plt

    m = model()
    histories = [np.zeros(0, dtype=int), np.arange(1, 9), np.array([4, 5, 6])]
    w = demo.attention_widget(m, histories)
    user, pos, block = w.children[0].children
    out = w.children[1]
    assert out.msg_id == "", "the widget must not capture output while the cell runs"
    assert len(out.outputs) == 1 and out.outputs[0]["output_type"] == "display_data"
    png = base64.b64decode(out.outputs[0]["data"]["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    for change in (lambda: setattr(user, "value", 2), lambda: setattr(pos, "value", 1),
                   lambda: setattr(block, "value", 1)):
        change()
        assert len(out.outputs) == 1 and out.msg_id == "", "each redraw replaces the one plot"
        new_png = base64.b64decode(out.outputs[0]["data"]["image/png"])
        assert new_png != png, "another user, position or block draws another plot"
        png = new_png
    assert not plt.get_fignums(), "every figure drawn for the widget is closed"
