"""The lecturers' side-by-side demo: plain functions and the widget's callbacks (no browser)."""
import numpy as np
import pandas as pd
import pytest

from course_lib import prep
from course_lib.demos.classic import build_widget, item_info, overlap, profile_table, search_items, side_by_side, top_k
from course_lib.models.als import ALS
from course_lib.models.knn import ItemKNN
from course_lib.models.popularity import Popularity

GENRES = ["Action", "Comedy", "Drama", "Horror"]


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    rows, t = [], 0
    for u in range(1, 61):
        g = u % 4
        for i in rng.choice(10, size=5, replace=False) + g * 10 + 101:  # raw item IDs 101..140
            rows.append((u, int(i), 4.0, t))
            t += 1
    split = prep.leave_one_out(pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]))
    items = pd.DataFrame({"item": np.arange(101, 141),
                          "title": [f"Movie {i}" for i in range(101, 141)],
                          "year": pd.array([1990 + i % 10 for i in range(40)], dtype="Int64"),
                          "genres": [[GENRES[i // 10]] for i in range(40)]})
    models = {"Popularity": Popularity().fit(split),
              "ItemKNN": ItemKNN(k=10).fit(split),
              "ALS": ALS(factors=4, alpha=2.0, reg=0.5, iterations=5, device="cpu").fit(split)}
    return split, items, models


def test_item_info_aligns_encoded_ids_with_titles(world):
    split, items, _ = world
    info = item_info(items, split.item_map, split.item_popularity())
    assert list(info.index) == list(range(1, split.n_items + 1))
    raw = split.item_map.decode([5])[0]
    assert info.loc[5, "title"] == f"Movie {raw}"
    assert info.loc[5, "genres"] == GENRES[(raw - 101) // 10]
    assert info.loc[5, "label"].endswith(f"({1990 + (raw - 101) % 10})")
    assert "popularity" in info.columns
    with pytest.raises(ValueError, match="title"):
        item_info(items.drop(columns="title"), split.item_map)
    hits = search_items(info, "movie 11")
    assert len(hits) > 0 and all("movie 11" in t.lower() for t in hits["title"])
    assert hits["popularity"].is_monotonic_decreasing
    assert len(search_items(info, "  ")) == 0


def test_side_by_side_has_k_titles_per_model_and_never_a_seen_item(world):
    split, items, models = world
    user = 7
    h = split.history("test")[user]
    table = side_by_side(models, h, items, split.item_map, k=5, user=user)
    assert table.shape == (5, 3) and list(table.columns) == list(models)
    assert list(table.index) == [1, 2, 3, 4, 5]
    info = item_info(items, split.item_map)
    seen_labels = set(info.loc[h, "label"])
    for col in table.columns:
        for cell in table[col]:
            label, genres = cell.split(" · ")
            assert label not in seen_labels and genres in GENRES
    # the learned models stay within the user's genre (each user clicks a single genre)
    user_genre = info.loc[h[0], "genres"]
    assert np.mean([c.endswith(user_genre) for c in table["ALS"]]) >= 0.8
    # same IDs as each model's own recommend()
    ids = top_k(models["ALS"], h, user=user, k=5)
    assert [c.split(" · ")[0] for c in table["ALS"]] == list(info.loc[ids, "label"])


def test_a_new_profile_is_folded_in(world):
    split, items, models = world
    info = item_info(items, split.item_map)
    horror = [i for i in info.index if info.loc[i, "genres"] == "Horror"][:3]
    table = side_by_side(models, horror, items, split.item_map, k=5, user=0, genres=False)
    assert all(" · " not in c for c in table["ALS"])
    labels = info.set_index("label")
    assert np.mean([labels.loc[c, "genres"] == "Horror" for c in table["ALS"]]) >= 0.8
    assert np.mean([labels.loc[c, "genres"] == "Horror" for c in table["ItemKNN"]]) >= 0.8
    ov = overlap(models, horror, k=5)
    assert ov.shape == (3, 3) and np.allclose(np.diag(ov), 1.0)
    assert ((ov.values >= 0) & (ov.values <= 1)).all()
    prof = profile_table(horror, items, split.item_map)
    assert list(prof.columns) == ["movie", "genres"] and len(prof) == 3
    with pytest.raises(ValueError, match="non-empty"):
        side_by_side({}, horror, items, split.item_map)


def test_widget_callbacks_update_the_table(world):
    split, items, models = world
    demo = build_widget(models, split, items, k=5, user=3)
    assert demo.table.shape == (5, 3) and "<table" in demo.output.value
    first = demo.table.copy()
    demo.set_user(4)
    assert demo.user_box.value == 4 and not demo.table.equals(first)
    # build a profile: switches to profile mode, user 0, history = the clicked items
    demo.set_query("movie 13")
    assert len(demo.matches.options) > 0
    item = demo.matches.options[0][1]
    demo.add_item(item)
    assert demo.mode.value == "profile" and demo.current()[0] == 0 and list(demo.current()[1]) == [item]
    assert demo.table.shape == (5, 3)
    demo.add_item(item)  # no duplicates
    assert demo.profile == [item]
    demo.k_slider.value = 7
    assert demo.table.shape == (7, 3)
    demo.clear()
    assert demo.table.empty and demo.output.value == ""
    demo.mode.value = "user"
    assert demo.table.shape == (7, 3)
    with pytest.raises(ValueError, match="user"):
        demo.set_user(10_000)
    empty = build_widget(models, split, items, user=None)
    assert empty.mode.value == "profile" and empty.table.empty


def test_a_history_that_leaves_fewer_than_k_items(world):
    """k above the unseen items left: the demo shows what is left, then empty cells, never a seen item."""
    split, items, models = world
    n = split.n_items
    history = np.arange(1, n - 1)  # all but the last two items
    for name, model in models.items():
        ids = top_k(model, history, user=0, k=5)
        assert sorted(ids.tolist()) == [n - 1, n], name
    table = side_by_side(models, history, items, split.item_map, k=5, user=0, genres=False)
    assert table.shape == (5, 3)
    info = item_info(items, split.item_map)
    for col in table.columns:
        assert sorted(table[col][:2]) == sorted(info.loc[[n - 1, n], "label"]) and list(table[col][2:]) == [""] * 3
    assert overlap(models, history, k=5).to_numpy().min() == 1.0
