"""How listing text becomes search tokens (pure; shared by both search adapters' callers and the tests).

FTS5's trigram tokenizer never matches a two-character query (手机, 华为) and Chinese has no spaces, so text is
split into runs: a CJK run becomes overlapping bigrams ("扫地机器人" → 扫地 地机 机器 器人) — a query of two or
more characters is then the phrase of its own bigrams, which matches exactly the texts that contain it — plus its
single characters (so a one-character query such as 书 matches too) and jieba's words (a query that is a real word
ranks the texts where it is a word above those where its characters only meet by chance: 华为手机 vs 中华为民).
Latin letters and digits are split at their boundaries and lower-cased ("Mate40Pro" → mate 40 pro), full-width
forms folded (ＩＰＨＯＮＥ → iphone).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass

_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[a-z]+|[0-9]+")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def is_cjk(token: str) -> bool:
    return bool(_CJK.match(token))


def runs(text: str) -> list[str]:
    """CJK runs and latin/digit runs, in order."""
    return _RUN.findall(normalise(text))


def stream(text: str) -> list[str]:
    """The positional token stream: bigrams of each CJK run (a lone character stays itself), latin/digit runs."""
    out: list[str] = []
    for run in runs(text):
        if is_cjk(run) and len(run) > 1:
            out.extend(run[i : i + 2] for i in range(len(run) - 1))
        else:
            out.append(run)
    return out


def unigrams(text: str) -> list[str]:
    return [ch for run in runs(text) if is_cjk(run) for ch in run]


_jieba = None


def _jieba_mod():  # noqa: ANN202
    global _jieba
    if _jieba is None:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()
        _jieba = jieba
    return _jieba


def words(text: str) -> list[str]:
    """jieba's words (search mode: long words and the words inside them) of two or more characters."""
    out: list[str] = []
    for run in runs(text):
        if is_cjk(run) and len(run) > 1:
            out.extend(w for w in _jieba_mod().cut_for_search(run, HMM=False) if len(w) > 1)
    return out


@dataclass(frozen=True)
class Analysed:
    """The token columns of one text."""

    stream: str
    unigrams: str
    words: str


def analyse(text: str, with_words: bool = True) -> Analysed:
    return Analysed(
        " ".join(stream(text)), " ".join(unigrams(text)), " ".join(words(text)) if with_words else ""
    )


@dataclass(frozen=True)
class QueryTerm:
    """One whitespace-separated term of a query: its phrase of stream tokens, or its single character."""

    text: str
    phrase: tuple[str, ...]  # stream tokens (empty for a single CJK character)
    single_char: str | None  # a one-character CJK term matches the unigram columns
    is_word: bool  # the whole term is one jieba word (ranks texts where it is a word higher)


def parse_query(q: str) -> list[QueryTerm]:
    """Terms of a query (several terms are AND); terms with no letters, digits or CJK are dropped, and so is a
    term repeated (小米 小米: the same hits, the same order, half the work)."""
    terms: list[QueryTerm] = []
    seen: set[str] = set()
    for raw in normalise(q).split():
        rs = runs(raw)
        if not rs or raw in seen:
            continue
        seen.add(raw)
        if len(rs) == 1 and is_cjk(rs[0]) and len(rs[0]) == 1:
            terms.append(QueryTerm(raw, (), rs[0], False))
            continue
        toks = tuple(stream(raw))
        joined = "".join(rs)
        is_word = len(rs) == 1 and is_cjk(joined) and joined in _words_of(joined)
        terms.append(QueryTerm(raw, toks, None, is_word))
    return terms


def _words_of(run: str) -> list[str]:
    return list(_jieba_mod().cut(run, HMM=False))


def contains_all(text: str, q: str) -> bool:
    """What the search promises for a query: every term is a substring of the (normalised) text, token-aligned
    for latin/digit runs. The relevance tests measure recall against this."""
    folded = " ".join(runs(text))
    flat = "".join(runs(text))
    for term in parse_query(q):
        if term.single_char is not None:
            if term.single_char not in flat:
                return False
        elif not _phrase_in(term.phrase, stream(text)):
            return False
    return bool(folded) or not parse_query(q)


def _phrase_in(phrase: tuple[str, ...], toks: list[str]) -> bool:
    n = len(phrase)
    return any(tuple(toks[i : i + n]) == phrase for i in range(len(toks) - n + 1))
