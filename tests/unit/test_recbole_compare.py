"""benchmarks/sequential.py --compare-recbole: the export to RecBole's atomic file, the same-split
check and the message when RecBole is not installed. RecBole itself is not needed."""
import json
import sys

import numpy as np
import pandas as pd
import pytest

from benchmarks import sequential
from course_lib import prep

pytestmark = pytest.mark.unit

RECBOLE_TYPES = {"token", "token_seq", "float", "float_seq"}  # recbole.utils.FeatureType


@pytest.fixture
def split():
    # user 7: four items, two pairs with equal time stamps; user 3: three items, all at the same
    # time; user 9: too short, dropped by the split. Rows deliberately not in time order.
    df = pd.DataFrame({
        "user": [7, 3, 7, 3, 7, 9, 3, 7],
        "item": [40, 11, 20, 12, 30, 50, 13, 10],
        "rating": [4.0, 3.0, 5.0, 1.0, 2.0, 5.0, 4.0, 3.0],
        "timestamp": [200, 50, 100, 50, 200, 10, 50, 100],
    })
    return prep.leave_one_out(df)


def read_atomic(path):
    """Read an atomic file the way RecBole's Dataset._load_feat does: a `field:type` header, tab separated."""
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
    fields = [h.split(":") for h in header]
    assert all(len(f) == 2 for f in fields), header
    assert {t for _, t in fields} <= RECBOLE_TYPES, header
    dtype = {h: (str if t.startswith("token") else float) for h, (_, t) in zip(header, fields)}
    return pd.read_csv(path, sep="\t", dtype=dtype, engine="python"), header


def test_export_is_a_recbole_atomic_file(split, tmp_path):
    path = sequential.export_recbole_atomic(split, tmp_path)
    assert path == tmp_path / "ml-100k" / "ml-100k.inter"
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    assert all(len(line.split("\t")) == 4 for line in text.splitlines())
    df, header = read_atomic(path)
    assert len(df) == len(split.train) + len(split.valid) + len(split.test) == 7  # user 9 dropped, as by the split
    # raw IDs as tokens, ratings kept
    assert set(df["user_id:token"]) == {"3", "7"}
    assert sorted(df["item_id:token"]) == sorted(["10", "20", "30", "40", "11", "12", "13"])
    assert sorted(df["rating:float"]) == sorted([4.0, 3.0, 5.0, 1.0, 2.0, 4.0, 3.0])


def test_time_rank_keeps_the_course_order(split, tmp_path):
    df, _ = read_atomic(sequential.export_recbole_atomic(split, tmp_path))
    ts = df["timestamp:float"].to_numpy()
    assert len(np.unique(ts)) == len(ts)  # no ties left for RecBole's sort to break
    for u in split.user_map.raw:
        uid = split.user_map.encode([u])[0]
        course = np.concatenate([f.loc[f.user == uid, "item"].to_numpy() for f in (split.train, split.valid, split.test)])
        ours = df[df["user_id:token"] == str(u)].sort_values("timestamp:float")["item_id:token"].astype(int)
        assert ours.tolist() == split.item_map.decode(course).tolist()
    # RecBole sorts all interactions by time, then groups by user: the last one is the course's test item
    last = df.sort_values("timestamp:float").groupby("user_id:token")["item_id:token"].last().to_dict()
    assert last == sequential.course_test_items(split)
    # ties in the raw time stamps: the split's (stable) order decides, not the item ID
    assert sequential.course_test_items(split) == {"3": "13", "7": "30"}


def test_same_test_item_check_catches_a_mismatch(split):
    course = sequential.course_test_items(split)
    assert sequential.test_item_mismatches(course, dict(course)) == []
    other = dict(course, **{"7": "40"})
    assert sequential.test_item_mismatches(course, other) == [("7", "30", "40")]
    missing = {"3": "13"}
    assert sequential.test_item_mismatches(course, missing) == [("7", "30", None)]


def _nothing_else_runs(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("nothing may run when RecBole is missing")
    monkeypatch.setattr(sequential, "quality_table", boom)
    monkeypatch.setattr(sequential, "run_recbole", boom)
    monkeypatch.setattr(sequential, "export_recbole_atomic", boom)


def test_missing_recbole_python_says_how_to_install_and_exits_2(tmp_path, monkeypatch, capsys):
    _nothing_else_runs(monkeypatch)
    out = tmp_path / "cmp.md"
    code = sequential.main(["--compare-recbole", "--recbole-python", str(tmp_path / "no-python"),
                            "--recbole-out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "make recbole" in err
    assert not out.exists()


def test_python_without_recbole_exits_2(tmp_path, monkeypatch, capsys):
    try:
        import recbole  # noqa: F401
        pytest.skip("this Python has RecBole")
    except ImportError:
        pass
    _nothing_else_runs(monkeypatch)
    code = sequential.main(["--compare-recbole", "--recbole-python", sys.executable,
                            "--recbole-out", str(tmp_path / "cmp.md")])
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot import RecBole" in err and "make recbole" in err


def test_compare_mode_fails_loudly_on_a_different_split(split, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sequential, "recbole_problem", lambda python: None)
    monkeypatch.setattr("course_lib.data.load_interactions", lambda name: pd.DataFrame(
        {"user": [7, 7, 7, 3, 3, 3], "item": [1, 2, 3, 1, 2, 3], "rating": [1.0] * 6, "timestamp": [1, 2, 3, 1, 2, 3]}))

    def fake_run(python, data_dir, model, seed, epochs, patience, out, threads):
        assert (data_dir / "ml-100k" / "ml-100k.inter").is_file()
        return {"test items": {"7": "3", "3": "2"}, "test": {"NDCG@10": 0.0, "HR@10": 0.0},
                "test, seen items excluded": {"NDCG@10": 0.0, "HR@10": 0.0}, "best epoch": 1, "epochs run": 1,
                "train s": 0.0}
    monkeypatch.setattr(sequential, "run_recbole", fake_run)
    monkeypatch.setattr(sequential, "quality_table", lambda *a, **k: pytest.fail("must stop before the course runs"))
    out = tmp_path / "cmp.md"
    code = sequential.main(["--compare-recbole", "--models", "gru4rec", "--seeds", "1", "--recbole-out", str(out)])
    assert code == 1
    assert "different test item" in capsys.readouterr().err
    raw = json.loads(out.with_suffix(".json").read_text())
    assert raw["test item mismatches"] == 1
    assert raw["mismatch examples (user, course item, RecBole item)"] == [["3", "3", "2"]]
    assert not out.exists()
