"""Offline MovieLens: fetched from the PyPI wheel, verified, typed; clear errors otherwise."""
import shutil

import pandas as pd
import pytest

from course_lib import data


@pytest.fixture(scope="module")
def ml():
    return data.load_movielens("ml-100k")


def test_ml100k_tables_are_complete_and_typed(ml):
    inter, items, users = ml.interactions, ml.items, ml.users
    assert len(inter) == 100_000 and inter["user"].nunique() == 943 and inter["item"].nunique() == 1682
    assert dict(inter.dtypes.astype(str)) == {"user": "int64", "item": "int64", "rating": "float32", "timestamp": "int64"}
    assert set(inter["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert len(items) == 1682 and str(items["year"].dtype) == "Int64"
    toy = items.set_index("item").loc[1]
    assert toy["title"] == "Toy Story" and toy["year"] == 1995 and toy["genres"] == ["Animation", "Children's", "Comedy"]
    assert all(isinstance(g, list) for g in items["genres"])
    assert len(users) == 943 and set(users["gender"].cat.categories) == {"F", "M"}
    assert users["age"].between(5, 100).all()


def test_cache_is_verified_by_checksum(tmp_path, monkeypatch):
    src = data.fetch("ml-100k")
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
    shutil.copytree(src, tmp_path / "ml-100k")
    assert len(data.load_interactions()) == 100_000
    with open(tmp_path / "ml-100k" / "ml-100k.inter", "a") as f:
        f.write("1\t1\t5\t0\n")
    with pytest.raises(data.DataError, match=r"corrupt.*course_lib\.data fetch ml-100k --force"):
        data.load_interactions()


def test_download_failure_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(data, "ML100K_WHEEL", "recbole==0.0.0.dev0")  # does not exist on PyPI
    with pytest.raises(data.DataError, match="python -m course_lib.data fetch"):
        data.fetch("ml-100k")


def test_ml1m_offline_says_it_needs_the_internet(tmp_path, monkeypatch):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(data, "ML1M_URL", "http://127.0.0.1:9/ml-1m.zip")  # nothing listens there
    with pytest.raises(data.DataError, match=r"needs the internet.*ml-100k"):
        data.load_movielens("ml-1m")


def test_unknown_dataset():
    with pytest.raises(ValueError, match="ml-100k"):
        data.load_movielens("ml-10m")


def test_cli_fetch_and_where(capsys):
    assert data.main(["fetch"]) == 0
    assert "verified" in capsys.readouterr().out
    assert data.main(["where"]) == 0


def test_subsample_keeps_whole_users(ml):
    sub = data.subsample(ml.interactions, 50, seed=1)
    assert sub["user"].nunique() == 50
    full = ml.interactions[ml.interactions["user"].isin(sub["user"].unique())]
    assert len(sub) == len(full)
    pd.testing.assert_frame_equal(sub, data.subsample(ml.interactions, 50, seed=1))


def test_hugging_face_dataset(ml):
    ds = data.to_hf_dataset(ml.items.head(20))
    assert ds.num_rows == 20 and ds[0]["title"] == "Toy Story" and ds[0]["genres"][0] == "Animation"
    users = data.to_hf_dataset(ml.users.head(5))
    assert users[0]["gender"] in {"F", "M"} and "string" in users.features["gender"].dtype
