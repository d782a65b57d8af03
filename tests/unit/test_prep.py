"""ID maps, splits, sequences and matrices."""
import numpy as np
import pandas as pd
import pytest

from course_lib import prep


@pytest.fixture
def toy():
    # user 10: a b c d (in time order); user 20: c a e; user 30: b (too short)
    return pd.DataFrame({
        "user": [10, 10, 20, 10, 20, 10, 20, 30],
        "item": ["c", "a", "c", "b", "a", "d", "e", "b"],
        "rating": [3.0, 5.0, 4.0, 1.0, 2.0, 4.0, 5.0, 3.0],
        "timestamp": [3, 1, 1, 2, 2, 4, 3, 1],
    })


def test_id_maps_are_contiguous_one_based(toy):
    enc, umap, imap = prep.encode_ids(toy)
    assert sorted(enc["user"].unique()) == [1, 2, 3]
    assert sorted(enc["item"].unique()) == [1, 2, 3, 4, 5]
    assert list(imap.decode(imap.encode(["e", "a"]))) == ["e", "a"]
    with pytest.raises(KeyError, match="zzz"):
        imap.encode(["zzz"])
    with pytest.raises(IndexError, match="padding"):
        imap.decode([0])


def test_leave_one_out_by_time(toy):
    s = prep.leave_one_out(toy)
    assert s.n_users == 2  # user 30 has one interaction and is dropped
    a, b, c, d, e = s.item_map.encode(list("abcde"))
    u10, u20 = s.user_map.encode([10, 20])
    assert dict(zip(s.test["user"], s.test["item"])) == {u10: d, u20: e}
    assert dict(zip(s.valid["user"], s.valid["item"])) == {u10: c, u20: a}
    assert list(s.history("valid")[u10]) == [a, b]
    assert list(s.history("test")[u10]) == [a, b, c]
    assert list(s.history("test")[u20]) == [c, a]
    seen = s.seen_matrix("test")
    assert seen.shape == (3, 6) and seen[u10, c] == 1 and seen[u10, d] == 0


def test_no_leakage_between_stages(toy):
    s = prep.leave_one_out(toy)
    for stage, later in (("valid", [s.valid, s.test]), ("test", [s.test])):
        hist = s.history(stage)
        for frame in later:
            for u, i in frame[["user", "item"]].itertuples(index=False):
                ts_target = frame.loc[(frame.user == u) & (frame.item == i)]
                assert len(ts_target) == 1
        last_train = s.train.groupby("user")["timestamp"].max()
        assert (s.valid.set_index("user")["timestamp"] >= last_train).all()
        assert all(len(h) < 5 for h in hist)


def test_leave_one_out_needs_three(toy):
    with pytest.raises(ValueError, match="min_interactions"):
        prep.leave_one_out(toy, min_interactions=2)
    with pytest.raises(ValueError, match="lacks column"):
        prep.leave_one_out(toy.rename(columns={"item": "movie"}))


def test_temporal_split_is_global_in_time():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"user": rng.integers(1, 30, 500), "item": rng.integers(1, 40, 500),
                       "timestamp": rng.permutation(500)})
    s = prep.temporal_split(df, 0.1, 0.2)
    assert s.train["timestamp"].max() < s.valid["timestamp"].min() <= s.valid["timestamp"].max() < s.test["timestamp"].min()
    assert set(s.test["user"]) <= set(s.train["user"]) and set(s.test["item"]) <= set(s.train["item"])


def test_interaction_matrix_explicit_and_implicit(toy):
    enc, umap, imap = prep.encode_ids(toy)
    R = prep.interaction_matrix(enc, len(umap), len(imap))
    assert R.shape == (4, 6) and R.nnz == 8
    u10, a = umap.encode([10])[0], imap.encode(["a"])[0]
    assert R[u10, a] == 5.0
    dup = pd.concat([enc, enc.assign(rating=1.0)])
    B = prep.interaction_matrix(dup, len(umap), len(imap), implicit=True)
    assert B.nnz == 8 and set(B.data) == {1.0}
    assert prep.density(B) == pytest.approx(8 / (3 * 5))
    with pytest.raises(ValueError, match="rating"):
        prep.interaction_matrix(enc.drop(columns="rating"), 3, 5)
    with pytest.raises(ValueError, match="encode"):
        prep.interaction_matrix(enc, 2, 5)


def test_pad_sequences_keeps_the_most_recent():
    out = prep.pad_sequences([[1, 2, 3, 4], [5], []], 3)
    assert out.tolist() == [[2, 3, 4], [0, 0, 5], [0, 0, 0]]
    assert prep.pad_sequences([[1, 2]], 3, side="right").tolist() == [[1, 2, 0]]
    with pytest.raises(ValueError):
        prep.pad_sequences([[1]], 0)


def test_filter_min_interactions_is_a_fixed_point():
    # user 3 has one item; dropping it leaves item 3 with one user, then user 2 with one item
    df = pd.DataFrame({"user": [1, 1, 1, 2, 2, 3, 4, 4], "item": [1, 2, 3, 1, 4, 1, 2, 3]})
    out = prep.filter_min_interactions(df, min_user=2, min_item=2)
    assert sorted(out["user"].unique()) == [1, 4] and sorted(out["item"].unique()) == [2, 3]


def test_item_popularity(toy):
    s = prep.leave_one_out(toy)
    pop = s.item_popularity()
    assert len(pop) == s.n_items + 1 and pop[0] == 0 and pop.sum() == len(s.train)


@pytest.mark.unit
def test_training_histories_are_the_items_before_validation():
    df = pd.DataFrame({"user": [1] * 5 + [2] * 4, "item": [10, 11, 12, 13, 14, 10, 12, 11, 13],
                       "timestamp": [1, 2, 3, 4, 5, 1, 2, 3, 4]})
    s = prep.leave_one_out(df)
    train = s.training_histories()
    assert [list(h) for h in train] == [list(h) for h in s.history("valid")]
    for u in (1, 2):
        seen = set(s.train.loc[s.train.user == u, "item"])
        assert set(train[u]) == seen and len(train[u]) == len(seen)
        assert s.valid.set_index("user").loc[u, "item"] not in seen
