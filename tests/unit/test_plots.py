"""course_lib.plots: check the data each figure shows, with the headless Agg backend."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from course_lib import plots, prep  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ----------------------------------------------------------------------------- long tail

def test_top_share_hand_computed():
    # 10 items; top 20% = 2 items with 50 + 30 of 100 interactions
    pop = np.array([5, 30, 1, 1, 50, 3, 2, 4, 2, 2])
    assert plots.top_share(pop, 0.2) == pytest.approx(0.8)
    assert plots.top_share(pop, 1.0) == pytest.approx(1.0)
    # ceil: 0.25 of 10 items is 3 items
    assert plots.top_share(pop, 0.25) == pytest.approx(85 / 100)
    assert plots.top_share(np.zeros(4), 0.5) == 0.0


def test_top_share_rejects_bad_input():
    with pytest.raises(ValueError, match="frac"):
        plots.top_share([1, 2], 0)
    with pytest.raises(ValueError, match="1-D"):
        plots.top_share(np.ones((2, 2)))
    with pytest.raises(ValueError, match=">= 0"):
        plots.top_share([1, -1])


def test_long_tail_plots_sorted_counts_and_share():
    rng = np.random.default_rng(0)
    pop = rng.zipf(1.8, size=200).astype(float)
    pop[:5] = 0  # zero-count items stay in the tail
    ax = plots.long_tail(pop)
    x, y = ax.lines[0].get_data()
    assert len(x) == 200 and list(x[:3]) == [1, 2, 3]
    assert np.all(np.diff(y) <= 0), "counts must be drawn most popular first"
    assert y.max() == pop.max()
    assert ax.get_yscale() == "log"
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    share = plots.top_share(pop, 0.2)
    assert any(f"{share:.1%}" in t.get_text() for t in ax.texts), "the head's share must be written on the plot"
    twin = ax.cumulative_ax
    cx, cy = twin.lines[0].get_data()
    assert cy[-1] == pytest.approx(1.0) and cy[39] == pytest.approx(share)


def test_long_tail_without_cumulative_and_on_given_axes():
    fig, (a, b) = plt.subplots(1, 2)
    out = plots.long_tail([3, 1, 2], ax=b, cumulative=False, top_frac=0.5)
    assert out is b and out.cumulative_ax is None
    assert len(b.lines) == 1 and len(a.lines) == 0
    assert list(b.lines[0].get_ydata()) == [3, 2, 1]


# ----------------------------------------------------------------------------- spy

def _toy_matrix():
    # users 1..3, items 1..4 (row/col 0 = padding); item 3 most popular, user 2 most active
    df = pd.DataFrame({"user": [1, 2, 2, 2, 3, 3], "item": [3, 1, 3, 4, 3, 4], "rating": [5, 4, 3, 2, 1, 5.0]})
    return prep.interaction_matrix(df, 3, 4)


def test_sort_by_popularity_orders_rows_and_columns():
    m = _toy_matrix()
    block, rows, cols = plots.sort_by_popularity(m)
    assert block.shape == (3, 4)
    assert rows[0] == 2 and cols[0] == 3 and 0 not in rows and 0 not in cols
    assert np.array_equal(block.toarray(), m.toarray()[np.ix_(rows, cols)])
    counts = (block.toarray() != 0).sum(0)
    assert np.all(np.diff(counts) <= 0)


def test_spy_shows_the_sorted_binary_block():
    m = _toy_matrix()
    ax = plots.spy(m)
    img = ax.images[0].get_array()
    assert img.shape == (3, 4)
    assert set(np.unique(img)) <= {0.0, 1.0}
    assert img.sum() == m.nnz
    assert img[0].sum() == 3 and img[:, 0].sum() == 3  # most active user, most popular item
    assert "50.0%" in ax.get_title()  # 6 of 12 cells
    ax2 = plots.spy(m, sort=False, max_rows=2, max_cols=3)
    assert np.array_equal(ax2.images[0].get_array(), (m.toarray()[1:3, 1:4] != 0).astype(float))
    ax3 = plots.spy(m.toarray(), padded=False, sort=False)
    assert ax3.images[0].get_array().shape == (4, 5)


def test_spy_rejects_bad_input():
    with pytest.raises(TypeError, match="sparse"):
        plots.spy([[1, 0], [0, 1]])


# ----------------------------------------------------------------------------- metric bars

RESULTS = {
    "Popularity": {"HR@10": 0.08, "NDCG@10": 0.04, "MRR": 0.04},
    "Random": {"HR@10": 0.006, "NDCG@10": 0.003, "MRR": 0.004},
}


def test_metric_bars_one_container_per_model():
    ax = plots.metric_bars(RESULTS, ["HR@10", "NDCG@10", "MRR"])
    assert len(ax.containers) == 2
    assert len(ax.patches) == 6
    heights = [p.get_height() for p in ax.containers[0]]
    assert heights == pytest.approx([0.08, 0.04, 0.04])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["HR@10", "NDCG@10", "MRR"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Popularity", "Random"]
    assert any(t.get_text() == "0.080" for t in ax.texts)
    # bars of one metric sit next to each other, inside their group
    x0 = [p.get_x() for p in ax.containers[0]]
    x1 = [p.get_x() for p in ax.containers[1]]
    assert all(a < b < a + 0.8 for a, b in zip(x0, x1))


def test_metric_bars_single_model_single_metric():
    ax = plots.metric_bars({"Popularity": RESULTS["Popularity"]}, "HR@10", annotate=False)
    assert len(ax.patches) == 1 and ax.get_legend() is None and not ax.texts


def test_metric_bars_missing_metric_says_which():
    with pytest.raises(KeyError, match="NDCG@20"):
        plots.metric_bars(RESULTS, ["NDCG@20"])
    with pytest.raises(ValueError):
        plots.metric_bars({}, ["HR@10"])


# ----------------------------------------------------------------------------- training curves

HISTORY = [
    {"epoch": 1, "loss": 1.0, "NDCG@10": 0.01},
    {"epoch": 2, "loss": 0.7},
    {"epoch": 3, "loss": 0.5, "NDCG@10": 0.03},
]


def test_training_curves_one_panel_per_metric():
    fig = plots.training_curves(HISTORY)
    axes = fig.axes
    assert [a.get_title() for a in axes] == ["loss", "NDCG@10"]
    x, y = axes[0].lines[0].get_data()
    assert list(x) == [1, 2, 3] and list(y) == [1.0, 0.7, 0.5]
    x, y = axes[1].lines[0].get_data()
    assert list(x) == [1, 3], "an epoch without the metric is skipped"
    assert axes[0].get_xlabel() == "epoch"


def test_training_curves_shared_panel():
    hist = [{"epoch": e, "train_loss": 1 / e, "valid_loss": 1.2 / e} for e in range(1, 5)]
    fig = plots.training_curves(hist, metrics=[("train_loss", "valid_loss")], title="SASRec")
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == ["train_loss", "valid_loss"]
    assert fig._suptitle.get_text() == "SASRec"


def test_training_curves_errors():
    with pytest.raises(ValueError, match="empty"):
        plots.training_curves([])
    with pytest.raises(KeyError, match="HR@10"):
        plots.training_curves(HISTORY, metrics=["HR@10"])
    with pytest.raises(KeyError, match="epoch"):
        plots.training_curves([{"loss": 1.0}])


# ----------------------------------------------------------------------------- leave-one-out timeline

def test_loo_timeline_colours_the_parts():
    df = pd.DataFrame({"user": [7] * 5 + [9] * 3, "item": [10, 11, 12, 13, 14, 10, 12, 11],
                       "timestamp": [5, 1, 2, 3, 4, 1, 2, 3]})
    split = prep.leave_one_out(df)
    u = int(split.user_map.encode([7])[0])
    ax = plots.loo_timeline(split, u)
    by_label = {line.get_label(): line.get_xdata() for line in ax.lines if line.get_label() in plots.COLORS}
    assert list(by_label["train"]) == [0, 1, 2] and list(by_label["valid"]) == [3] and list(by_label["test"]) == [4]
    # the test item is the user's last by time: raw item 10 (timestamp 5)
    assert ax.texts[-1].get_text() == str(int(split.item_map.encode([10])[0]))
    ax2 = plots.loo_timeline(split, u, last=2, labels={int(split.item_map.encode([10])[0]): "Toy Story"})
    assert len(ax2.texts) == 2 and ax2.texts[-1].get_text() == "Toy Story"
    with pytest.raises(ValueError, match="no interactions"):
        plots.loo_timeline(split, 99)
