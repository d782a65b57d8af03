"""Live demo for lecturers: the top-10 of each classic recommender, side by side.

Pick an existing user, or build a new profile by clicking a few movies, and compare
what popularity, the neighbourhood models, matrix factorization and item2vec
recommend, with titles and genres. Plain functions (testable without a browser) and
one widget builder on **core ipywidgets** (it works on Colab)::

    info = item_info(ml.items, split.item_map)                   # encoded ID -> title, year, genres
    side_by_side(models, history, ml.items, split.item_map)      # DataFrame: rank x model
    side_by_side(models, history, ml.items, split.item_map, user=42)
    overlap(models, history)                                     # Jaccard of the top-k lists
    demo = build_widget(models, split, ml.items); demo.widget    # in a notebook

How each model treats a **new** user (``user=0``, only the clicked items known):

* Popularity: ignores the profile (same list for everybody, minus what was clicked);
* ItemKNN / ContentKNN / item2vec: need only the history, so nothing changes;
* UserKNN: compares the clicked items with every training user's row;
* ALS, BPR-MF: **fold-in**: a user vector fitted with the item factors fixed, by the
  model's own objective: ALS solves its user step in closed form
  (:meth:`course_lib.models.als.ALS.fold_in`), BPR-MF takes 100 gradient steps on the BPR loss
  over (clicked, not clicked) pairs (:meth:`course_lib.models.bpr.BPRMF.fold_in`);
* ExplicitMF: ridge regression of a user bias and vector on the clicked items, each
  taken as a rating of ``assumed_rating`` (5 stars).

For an existing user, every model gets that user's ID **and** history (the history is
excluded from the recommendations either way).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd


def item_info(items_frame: pd.DataFrame, item_map, popularity: np.ndarray | None = None) -> pd.DataFrame:
    """One row per **encoded** item ID (index 1..n): ``title``, ``year``, ``genres`` (text),
    ``label`` ("Title (year)") and, when given, ``popularity`` (training interactions)."""
    need = {"item", "title"}
    if not need <= set(items_frame.columns):
        raise ValueError(f"items_frame needs columns {sorted(need)} (load_movielens().items), has {list(items_frame.columns)}")
    n = len(item_map)
    raw = item_map.decode(np.arange(1, n + 1))
    frame = items_frame.drop_duplicates("item").set_index("item").reindex(raw)
    title = frame["title"].astype(object).where(frame["title"].notna(), [f"item {r}" for r in raw])
    year = frame["year"] if "year" in frame.columns else pd.Series(pd.NA, index=frame.index)
    genres = frame["genres"] if "genres" in frame.columns else pd.Series([[]] * n, index=frame.index)
    genres = genres.apply(lambda g: ", ".join(g) if isinstance(g, (list, tuple, np.ndarray)) else ("" if pd.isna(g) else str(g)))
    label = [f"{t} ({int(y)})" if pd.notna(y) else str(t) for t, y in zip(title, year)]
    out = pd.DataFrame({"title": title.to_numpy(), "year": year.to_numpy(), "genres": genres.to_numpy(),
                        "label": label}, index=pd.Index(np.arange(1, n + 1), name="item"))
    if popularity is not None:
        pop = np.asarray(popularity)
        if len(pop) != n + 1:
            raise ValueError(f"popularity must have n_items + 1 = {n + 1} entries (index 0 = padding), got {len(pop)}")
        out["popularity"] = pop[1:]
    return out


def search_items(info: pd.DataFrame, query: str, limit: int = 15) -> pd.DataFrame:
    """Items whose title contains ``query`` (case-insensitive), most popular first when known."""
    q = (query or "").strip().lower()
    if not q:
        return info.iloc[:0]
    hits = info[info["title"].astype(str).str.lower().str.contains(q, regex=False)]
    if "popularity" in hits.columns:
        hits = hits.sort_values("popularity", ascending=False, kind="mergesort")
    return hits.head(limit)


def _history(history) -> np.ndarray:
    h = np.asarray(history if history is not None else [], dtype=np.int64).ravel()
    return h[h > 0]


def top_k(model, history, user: int = 0, k: int = 10) -> np.ndarray:
    """``model``'s top-``k`` item IDs for one user (``user=0``: a new user known by ``history`` only).

    Fewer than ``k`` when fewer unseen items are left (the -1 fills of ``recommend`` are dropped).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ids = np.asarray(model.recommend(np.array([int(user)]), [_history(history)], k=k))[0]
    return ids[ids > 0]


def _check_models(models: Mapping) -> None:
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty dict {name: fitted model}")
    for name, m in models.items():
        if not hasattr(m, "recommend"):
            raise TypeError(f"models[{name!r}] has no recommend(); pass fitted course_lib models")


def side_by_side(models: Mapping, history, items_frame: pd.DataFrame, item_map, k: int = 10, user: int = 0,
                 genres: bool = True, info: pd.DataFrame | None = None) -> pd.DataFrame:
    """The top-``k`` of every model for one user: rows are ranks 1..k, columns the models,
    cells "Title (year) · genres".

    ``history``: the user's items (encoded IDs, excluded from every list); ``user``: an
    encoded user ID, or 0 for a new user known only by ``history``. ``info`` (from
    :func:`item_info`) saves rebuilding the title table on every call.
    """
    _check_models(models)
    info = item_info(items_frame, item_map) if info is None else info
    cols = {}
    for name, model in models.items():
        ids = top_k(model, history, user=user, k=k)
        rows = info.loc[ids]
        cells = [f"{lab} · {g}" if genres and g else lab for lab, g in zip(rows["label"], rows["genres"])]
        cols[name] = cells + [""] * (k - len(cells))  # nothing left to recommend: an empty cell
    table = pd.DataFrame(cols, index=pd.Index(np.arange(1, k + 1), name="rank"))
    return table


def overlap(models: Mapping, history, user: int = 0, k: int = 10) -> pd.DataFrame:
    """Jaccard overlap of the models' top-``k`` lists for one user (1 = same items)."""
    _check_models(models)
    lists = {name: set(top_k(m, history, user=user, k=k).tolist()) for name, m in models.items()}
    names = list(lists)
    vals = [[len(lists[a] & lists[b]) / max(len(lists[a] | lists[b]), 1) for b in names] for a in names]
    return pd.DataFrame(vals, index=names, columns=names)


def profile_table(history, items_frame: pd.DataFrame, item_map, last: int | None = 10,
                  info: pd.DataFrame | None = None) -> pd.DataFrame:
    """The user's (last ``last``) items with titles and genres, most recent last."""
    info = item_info(items_frame, item_map) if info is None else info
    h = _history(history)
    if last:
        h = h[-last:]
    return info.loc[h, ["label", "genres"]].rename(columns={"label": "movie"})


# ----------------------------------------------------------------------------- the widget


class ClassicDemo:
    """State and callbacks of the lecturers' widget; ``.widget`` is what a notebook displays.

    Every callback goes through :meth:`set_user`, :meth:`add_item`, :meth:`remove_last`,
    :meth:`clear` and :meth:`refresh`, so the behaviour is testable without a browser:
    after each of them ``.table`` holds the side-by-side DataFrame on screen.
    """

    def __init__(self, models: Mapping, split, items_frame: pd.DataFrame, k: int = 10, stage: str = "test",
                 user: int | None = 1):
        import ipywidgets as W

        _check_models(models)
        self.models = dict(models)
        self.split = split
        self.histories = split.history(stage)
        self.info = item_info(items_frame, split.item_map, split.item_popularity())
        self.profile: list[int] = []
        self.k = k
        self.user = 0
        self.table = pd.DataFrame()

        self.mode = W.ToggleButtons(options=[("existing user", "user"), ("new profile", "profile")], value="user",
                                    description="Who:")
        self.user_box = W.BoundedIntText(value=1, min=1, max=split.n_users, description="user ID:",
                                         layout=W.Layout(width="180px"))
        self.random_btn = W.Button(description="random user", icon="random")
        self.search = W.Text(placeholder="type part of a title, e.g. star wars", description="search:",
                             continuous_update=True)
        self.matches = W.Select(options=[], rows=6, description="matches:", layout=W.Layout(width="480px"))
        self.add_btn = W.Button(description="add to profile", button_style="success", icon="plus")
        self.undo_btn = W.Button(description="remove last", icon="undo")
        self.clear_btn = W.Button(description="clear", icon="trash")
        self.k_slider = W.IntSlider(value=k, min=5, max=20, description="top-k:")
        self.profile_html = W.HTML()
        self.output = W.HTML()
        self._rng = np.random.default_rng(0)

        self.mode.observe(lambda ch: self.refresh(), names="value")
        self.user_box.observe(lambda ch: self.set_user(ch["new"]), names="value")
        self.random_btn.on_click(lambda _: self.set_user(int(self._rng.integers(1, split.n_users + 1))))
        self.search.observe(lambda ch: self.set_query(ch["new"]), names="value")
        self.add_btn.on_click(lambda _: self.add_item(self.matches.value) if self.matches.value else None)
        self.undo_btn.on_click(lambda _: self.remove_last())
        self.clear_btn.on_click(lambda _: self.clear())
        self.k_slider.observe(lambda ch: self.set_k(ch["new"]), names="value")

        user_row = W.HBox([self.user_box, self.random_btn])
        profile_row = W.VBox([self.search, self.matches, W.HBox([self.add_btn, self.undo_btn, self.clear_btn])])
        self.widget = W.VBox([W.HBox([self.mode, self.k_slider]), user_row, profile_row, self.profile_html, self.output])
        if user is None:
            self.mode.value = "profile"
        else:
            self.set_user(user)
        self.refresh()

    # -- callbacks ----------------------------------------------------------------
    def set_user(self, user: int) -> None:
        if not 1 <= int(user) <= self.split.n_users:
            raise ValueError(f"user must be an encoded ID in 1..{self.split.n_users}, got {user}")
        self.user = int(user)
        if self.user_box.value != self.user:
            self.user_box.value = self.user  # fires set_user again, harmlessly
        if self.mode.value != "user":
            self.mode.value = "user"  # fires refresh
        else:
            self.refresh()

    def set_query(self, query: str) -> None:
        hits = search_items(self.info, query)
        self.matches.options = [(f"{lab} · {g}", int(i)) for i, lab, g in zip(hits.index, hits["label"], hits["genres"])]

    def add_item(self, item: int) -> None:
        item = int(item)
        if not 1 <= item <= self.split.n_items:
            raise ValueError(f"item must be an encoded ID in 1..{self.split.n_items}, got {item}")
        if item not in self.profile:
            self.profile.append(item)
        if self.mode.value != "profile":
            self.mode.value = "profile"
        else:
            self.refresh()

    def remove_last(self) -> None:
        if self.profile:
            self.profile.pop()
        self.refresh()

    def clear(self) -> None:
        self.profile = []
        self.refresh()

    def set_k(self, k: int) -> None:
        self.k = int(k)
        self.refresh()

    # -- what is shown ----------------------------------------------------------------
    def current(self) -> tuple[int, np.ndarray]:
        """(user ID or 0, history) that the table is computed for."""
        if self.mode.value == "user":
            return self.user, self.histories[self.user]
        return 0, np.array(self.profile, dtype=np.int64)

    def refresh(self) -> None:
        user, history = self.current()
        shown = profile_table(history, None, None, last=10, info=self.info)
        who = f"user {user}" if user else "new profile"
        if len(history) == 0:
            self.profile_html.value = f"<b>{who}</b>: no movies yet. Search and add a few."
            self.table = pd.DataFrame()
            self.output.value = ""
            return
        items = "".join(f"<li>{m} <i>({g})</i></li>" for m, g in zip(shown["movie"], shown["genres"]))
        self.profile_html.value = (f"<b>{who}</b>: {len(history)} movies; the last {len(shown)}:<ol>{items}</ol>")
        self.table = side_by_side(self.models, history, None, None, k=self.k, user=user, info=self.info)
        self.output.value = self.table.to_html(escape=True)


def build_widget(models: Mapping, split, items_frame: pd.DataFrame, k: int = 10, stage: str = "test",
                 user: int | None = 1) -> ClassicDemo:
    """The lecturers' widget: ``demo = build_widget(...)``, then display ``demo.widget``.

    ``models``: ``{name: fitted model}``; ``split``: the split they were trained on
    (its histories at ``stage`` are the existing users' profiles); ``user``: the user
    shown first (``None``: start with an empty new profile).
    """
    return ClassicDemo(models, split, items_frame, k=k, stage=stage, user=user)
