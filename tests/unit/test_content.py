"""ContentKNN: TF-IDF by hand, feature alignment with the item map, cold items."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from course_lib import prep
from course_lib.models.content import ContentKNN, genre_matrix, item_features, tfidf, tokenize


def toy():
    items = pd.DataFrame({
        "item": [10, 20, 30, 40, 50],
        "title": ["Star Wars", "Return of the Jedi", "Toy Story", "Toy Story 2", "Heat"],
        "year": pd.array([1977, 1983, 1995, 1999, None], dtype="Int64"),
        "genres": [["Sci-Fi", "Action"], ["Sci-Fi", "Action"], ["Animation", "Comedy"], ["Animation", "Comedy"], ["Crime"]],
    })
    rows = [(1, 10, 0), (1, 20, 1), (1, 30, 2), (2, 30, 3), (2, 40, 4), (2, 50, 5), (3, 10, 6), (3, 50, 7), (3, 20, 8)]
    inter = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    return items, prep.leave_one_out(inter)


def test_tokenize_drops_stopwords_and_case():
    assert tokenize("The Return of the JEDI (1983)") == ["return", "jedi", "1983"]


@pytest.mark.parametrize("title,words", [
    ("Misérables, Les", ["misérables"]),                      # MovieLens article order
    ("Café au lait", ["café", "au", "lait"]),
    ("Cérémonie, La", ["cérémonie"]),
    ("Á köldum klaka (Cold Fever)", ["köldum", "klaka", "cold", "fever"]),
    ("Nénette et Boni", ["nénette", "et", "boni"]),
    ("Москва слезам не верит", ["москва", "слезам", "не", "верит"]),
    ("Ζορμπάς ο Έλληνας", ["ζορμπάς", "έλληνας"]),
    ("Être et avoir (2002)", ["être", "et", "avoir", "2002"]),
    ("Straße der Sehnsucht", ["straße", "sehnsucht"]),
    ("Cafe\u0301 Society", ["café", "society"]),             # decomposed accent: same word as precomposed
])
def test_tokenize_keeps_accented_and_non_latin_letters(title, words):
    assert tokenize(title) == words


def test_tokenize_random_accented_words_survive_whole():
    """Random words mixing ASCII, accented and non-Latin letters: each comes back whole, once."""
    rng = np.random.default_rng(0)
    letters = list("abcdefghijklmnopqrstuvwxyz") + list("éèêëàâäîïôöûüùçñåøæœ") + list("абвгдежзийклмнопрстуфхцчшщыэюя") \
        + list("αβγδεζηθικλμνξοπρστυφχψω")
    for _ in range(200):
        words = ["".join(rng.choice(letters, size=int(rng.integers(2, 9)))) for _ in range(int(rng.integers(1, 5)))]
        words = [w for w in words if w not in ("la", "le", "el", "de", "du")]  # stop words
        sep = rng.choice([" ", ", ", " - ", " (", ": "])
        assert tokenize(sep.join(words)) == words


def test_tfidf_by_hand():
    docs = [["toy", "story"], ["toy", "story", "2"], ["heat"]]
    M, vocab = tfidf(docs)
    n = 3
    idf = {w: np.log((1 + n) / (1 + df)) + 1 for w, df in {"toy": 2, "story": 2, "2": 1, "heat": 1}.items()}
    row = np.zeros(len(vocab))
    for w in docs[1]:
        row[vocab[w]] += idf[w]
    np.testing.assert_allclose(M.toarray()[1], row / np.linalg.norm(row), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(M.toarray(), axis=1), 1.0, rtol=1e-6)
    M2, v2 = tfidf(docs, min_df=2)
    assert set(v2) == {"toy", "story"} and M2.toarray()[2].sum() == 0


def test_features_follow_the_item_map():
    items, split = toy()
    F, names = item_features(items, split.item_map)
    assert F.shape[0] == split.n_items + 1 and F[0].nnz == 0
    np.testing.assert_allclose(np.sqrt(F.multiply(F).sum(1)).A.ravel()[1:], 1.0, rtol=1e-5)
    G = genre_matrix(items.iloc[::-1], split.item_map)  # row order of the frame does not matter
    col = names.index("genre:Crime")
    heat = int(split.item_map.encode([50])[0])
    assert G[heat, col] == 1 and G[heat].nnz == 1


def test_nearest_neighbours_make_sense():
    items, split = toy()
    model = ContentKNN(items, k=2).fit(split)
    enc = dict(zip([10, 20, 30, 40, 50], split.item_map.encode([10, 20, 30, 40, 50])))
    ids, sims = model.similar_items(enc[30], k=1)
    assert ids[0] == enc[40] and 0 < sims[0] <= 1 + 1e-5
    ids, _ = model.similar_items(enc[10], k=1)
    assert ids[0] == enc[20]


def test_cold_item_is_scored_but_not_by_itemknn():
    from course_lib.models.knn import ItemKNN
    items, split = toy()
    cold = int(split.item_map.encode([40])[0])
    cold_split = dataclasses.replace(split, train=split.train[split.train.item != cold].reset_index(drop=True))
    hist = [np.array(split.item_map.encode([30]))]
    content = ContentKNN(items, k=3).fit(cold_split).score(np.array([0]), hist)
    collab = ItemKNN(k=3).fit(cold_split).score(np.array([0]), hist)
    assert content[0, cold] > 0 and content[0, cold] == content[0, 1:].max()
    assert collab[0, cold] == 0


def test_constructor_or_fit_items_and_errors():
    items, split = toy()
    a = ContentKNN(items).fit(split).score(np.array([1]), [np.array([1])])
    b = ContentKNN().fit(split, items=items).score(np.array([1]), [np.array([1])])
    np.testing.assert_array_equal(a, b)
    assert a.shape == (1, split.n_items + 1) and np.isneginf(a[0, 0])
    with pytest.raises(ValueError, match="items table"):
        ContentKNN().fit(split)
    with pytest.raises(ValueError, match="lacks column"):
        ContentKNN(items.drop(columns="genres")).fit(split)
    with pytest.raises(TypeError, match="has no field 'colour'"):
        ContentKNN(items, colour=1)
