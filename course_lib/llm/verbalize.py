"""Items, users and interactions as text: the universal interface of an LLM recommender.

MovieLens's catalog has quirks that a language model reads literally, so they are fixed
here, once, for every LLM notebook:

* article order: "Usual Suspects, The" -> "The Usual Suspects" (also "Postino, Il",
  "Misérables, Les", and inside an alternative title: "Horseman on the Roof, The (Hussard
  sur le toit, Le)" -> "The Horseman on the Roof (Le Hussard sur le toit)");
* an item titled "unknown" (item 267, spelled "unkonwn" in one copy: no title at all) and years that are missing or not a number;
* duplicate titles with two IDs ("Chasing Amy" 246 and 268): :func:`item_texts` can
  disambiguate them so that text maps back to one ID.

    item_text("Usual Suspects, The", 1995, ["Crime", "Thriller"])
    # 'The Usual Suspects (1995); genres: crime, thriller'
"""
from __future__ import annotations

import math
import re
from typing import Iterable, Sequence

import pandas as pd

ARTICLES = ("The", "A", "An", "Il", "La", "Le", "Les", "L'", "Das", "Der", "Die", "El", "Los", "Las", "Lo", "I", "Det",
            "Den", "En", "Et", "O", "Os", "Un", "Une", "Gli")
_ARTICLE = re.compile(r"^(?P<body>.+?),\s*(?P<art>" + "|".join(re.escape(a) for a in ARTICLES) + r")$")
_ALIAS = re.compile(r"^(?P<main>.*?)\s*\((?P<alias>[^()]*)\)\s*$")
UNKNOWN_TITLE = "an untitled movie"
PLACEHOLDER_TITLES = {"unknown", "unkonwn", "n/a", "none"}  # ml-100k's item 267 is spelled "unkonwn"


def _move_article(text: str) -> str:
    m = _ARTICLE.match(text.strip())
    if not m:
        return text.strip()
    art = m.group("art")
    sep = "" if art.endswith("'") else " "
    return f"{art}{sep}{m.group('body').strip()}"


def clean_title(title) -> str:
    """The title as a person writes it: leading article restored, in the alternative title too.

    An empty or "unknown" title becomes ``"an untitled movie"`` (never the word "unknown",
    which a model would read as a title)."""
    if title is None or (isinstance(title, float) and math.isnan(title)):
        return UNKNOWN_TITLE
    text = re.sub(r"\s+", " ", str(title)).strip()
    if not text or text.lower() in PLACEHOLDER_TITLES:
        return UNKNOWN_TITLE
    m = _ALIAS.match(text)
    if m and m.group("main"):
        main, alias = _move_article(m.group("main")), _move_article(m.group("alias"))
        return f"{main} ({alias})"
    return _move_article(text)


def clean_year(year) -> int | None:
    """A plausible release year as an int, else None (MovieLens has blanks and a year "V")."""
    try:
        if year is None or pd.isna(year):
            return None
        y = int(float(str(year).strip()))
    except (TypeError, ValueError):
        return None
    return y if 1870 <= y <= 2100 else None


def _genres(genres) -> list[str]:
    if genres is None or (isinstance(genres, float) and math.isnan(genres)):
        return []
    if isinstance(genres, str):
        genres = re.split(r"[|,\s]+", genres)
    return [g.strip().replace("_", " ") for g in genres if g and str(g).strip() and str(g).lower() != "unknown"]


def item_text(title, year=None, genres: Iterable[str] | None = None, with_genres: bool = True) -> str:
    """One movie as text: ``"The Usual Suspects (1995); genres: crime, thriller"``.

    The year is left out when it is missing or invalid, the genres when there are none or
    ``with_genres=False`` (a prompt that must not give the answer away)."""
    text = clean_title(title)
    y = clean_year(year)
    if y is not None:
        text += f" ({y})"
    g = _genres(genres) if with_genres else []
    if g:
        text += "; genres: " + ", ".join(x.lower() for x in g)
    return text


def item_texts(items: pd.DataFrame, with_genres: bool = True, disambiguate: bool = True) -> pd.Series:
    """Text of every item in a catalog frame (``item``, ``title``, ``year``, ``genres``), indexed by ``item``.

    With ``disambiguate``, items whose text would be identical get their ID appended
    (``"Chasing Amy (1997) [item 268]"``), so that text maps back to exactly one item."""
    missing = {"item", "title"} - set(items.columns)
    if missing:
        raise ValueError(f"items needs columns item, title (and optionally year, genres); missing {sorted(missing)}")
    years = items["year"] if "year" in items else [None] * len(items)
    genres = items["genres"] if "genres" in items else [None] * len(items)
    texts = [item_text(t, y, g, with_genres) for t, y, g in zip(items["title"], years, genres)]
    s = pd.Series(texts, index=items["item"].to_numpy(), name="text")
    if disambiguate:
        dup = s.duplicated(keep=False)
        s[dup] = [f"{t} [item {i}]" for i, t in zip(s.index[dup], s[dup])]
    return s


def interaction_text(title, rating=None, scale: int = 5) -> str:
    """One interaction: ``"rated The Matrix 5/5"``, or ``"watched The Matrix"`` without a rating."""
    t = clean_title(title)
    if rating is None or (isinstance(rating, float) and math.isnan(rating)):
        return f"watched {t}"
    r = float(rating)
    return f"rated {t} {r:g}/{scale}"


def history_text(titles: Sequence[str], ratings: Sequence[float] | None = None, max_items: int | None = None,
                 sep: str = "; ") -> str:
    """A time-ordered history as one line (the most recent ``max_items`` kept, oldest first)."""
    titles = list(titles)
    if not titles:
        raise ValueError("the history is empty: a user needs at least one interaction to be described")
    if ratings is not None and len(ratings) != len(titles):
        raise ValueError(f"{len(titles)} titles but {len(ratings)} ratings")
    pairs = list(zip(titles, ratings if ratings is not None else [None] * len(titles)))
    if max_items is not None:
        pairs = pairs[-max_items:]
    if ratings is None:
        return sep.join(clean_title(t) for t, _ in pairs)
    return sep.join(interaction_text(t, r) for t, r in pairs)


_FIELDS = {"entertainment", "healthcare", "marketing", "sales", "academic", "research"}


def _occupation_clause(occupation) -> str:
    occ = str(occupation).strip().lower() if occupation is not None and not pd.isna(occupation) else ""
    if occ in ("", "other", "unknown"):
        return ""
    if occ == "none":
        return "with no occupation"
    if occ == "retired":
        return "who is retired"
    if occ in ("student", "homemaker"):
        return f"who is a {occ}"
    if occ in _FIELDS:
        return f"who works in {occ}"
    return f"who works as {'an' if occ[0] in 'aeiou' else 'a'} {occ}"


def user_profile(age=None, gender=None, occupation=None, liked: Sequence[str] = (), disliked: Sequence[str] = (),
                 max_titles: int = 5) -> str:
    """A natural-language profile: ``"A 24-year-old man who works as a technician. Liked: ... Disliked: ..."``.

    Any field may be missing; ``liked`` / ``disliked`` are titles (most telling first) of which
    ``max_titles`` each are kept. A user with no fields and no titles raises a ValueError."""
    parts = []
    noun = {"M": "man", "F": "woman"}.get(str(gender).strip().upper(), "person") if gender is not None else "person"
    has_age = age is not None and not pd.isna(age)
    clause = _occupation_clause(occupation)
    if has_age or noun != "person" or clause:
        desc = (f"{int(age)}-year-old " if has_age else "") + noun + (f" {clause}" if clause else "")
        article = "An" if desc[0] in "aeiou" or re.match(r"(8|11|18)\b|8\d-|11-|18-", desc) else "A"
        parts.append(f"{article} {desc}.")
    if liked:
        parts.append("Liked: " + ", ".join(clean_title(t) for t in list(liked)[:max_titles]) + ".")
    if disliked:
        parts.append("Disliked: " + ", ".join(clean_title(t) for t in list(disliked)[:max_titles]) + ".")
    if not parts:
        raise ValueError("nothing to describe: give at least one of age, gender, occupation, liked, disliked")
    return " ".join(parts)
