"""The analysis chain of the fake Elasticsearch: the components the listings mapping declares, built as Lucene
builds them, and nothing else (any other tokenizer, filter, char filter or option is refused at index creation).

References (Elasticsearch reference, text analysis):
- standard tokenizer (Unicode text segmentation, UAX #29; each ideograph is its own token; max_token_length 255):
  https://www.elastic.co/docs/reference/text-analysis/analysis-standard-tokenizer
  and the word-break rules it follows: https://www.unicode.org/reports/tr29/#Word_Boundary_Rules
- cjk_width: https://www.elastic.co/docs/reference/text-analysis/analysis-cjk-width-tokenfilter
- lowercase: https://www.elastic.co/docs/reference/text-analysis/analysis-lowercase-tokenfilter
- cjk_bigram (adjacent CJK characters → overlapping bigrams; a character with no neighbour stays a unigram; "All
  non-CJK input is passed through unmodified"): https://www.elastic.co/docs/reference/text-analysis/analysis-cjk-bigram-tokenfilter
- word_delimiter_graph (split at non-alphanumerics, case and letter-number transitions; trailing 's dropped):
  https://www.elastic.co/docs/reference/text-analysis/analysis-word-delimiter-graph-tokenfilter
- the standard analyzer (standard tokenizer + lowercase, no stop words by default):
  https://www.elastic.co/docs/reference/text-analysis/analysis-standard-analyzer

Where the docs are silent the behaviour follows Lucene's sources (StandardTokenizer, CJKBigramFilter,
WordDelimiterIterator): a bigram never spans a gap in offsets ("华为 手机" gives 华为, 手机, not 为手), and every
token of this chain has a position increment of 1 (no stacked tokens: output_unigrams, preserve_original and the
catenate options are refused).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import EsError, not_implemented


@dataclass(frozen=True)
class Token:
    text: str
    type: str  # Lucene's token type: <ALPHANUM>, <NUM>, <IDEOGRAPHIC>, <HIRAGANA>, <KATAKANA>, <HANGUL>, ...
    start: int  # offsets in the original text
    end: int


# --- the standard tokenizer (UAX #29 word boundaries) ----------------------------------------------------------
# word-break classes, as far as the rules below need them
LETTER, NUMERIC, KATAKANA, HAN, HIRAGANA, HANGUL = "L", "N", "K", "H", "I", "G"
MID_LETTER, MID_NUM, MID_NUM_LET, SINGLE_QUOTE, EXTEND_NUM_LET, EXTEND, EMOJI, OTHER = (
    "ML",
    "MN",
    "MNL",
    "SQ",
    "ENL",
    "X",
    "E",
    "O",
)
_MID_LETTER = set("\u003a\u00b7\u0387\u05f4\u2027\ufe13\ufe55\uff1a")
_MID_NUM = set(",;\u037e\u0589\u060c\u060d\u066c\u07f8\u2044\ufe10\ufe14\ufe50\ufe54\uff0c\uff1b")
_MID_NUM_LET = set(".\u2018\u2019\u2024\ufe52\uff07\uff0e")
_EXTEND_NUM_LET = set("_\u202f\u203f\u2040\u2054\ufe33\ufe34\ufe4d\ufe4e\ufe4f\uff3f")


@lru_cache(maxsize=65536)
def _wb_class(ch: str) -> str:
    cp = ord(ch)
    if (
        0x3400 <= cp <= 0x4DBF
        or 0x4E00 <= cp <= 0x9FFF
        or 0xF900 <= cp <= 0xFAFF
        or 0x20000 <= cp <= 0x3FFFF
        or cp in (0x3005, 0x3007, 0x3021)
    ):
        return HAN
    if 0x3041 <= cp <= 0x309F:
        return HIRAGANA
    if 0x30A0 <= cp <= 0x30FF or 0x31F0 <= cp <= 0x31FF or 0xFF66 <= cp <= 0xFF9F or 0x32D0 <= cp <= 0x32FE:
        return KATAKANA
    if 0xAC00 <= cp <= 0xD7A3 or 0x1100 <= cp <= 0x11FF or 0x3130 <= cp <= 0x318F:
        return HANGUL
    if ch == "'":
        return SINGLE_QUOTE
    if ch in _MID_LETTER:
        return MID_LETTER
    if ch in _MID_NUM:
        return MID_NUM
    if ch in _MID_NUM_LET:
        return MID_NUM_LET
    if ch in _EXTEND_NUM_LET:
        return EXTEND_NUM_LET
    cat = unicodedata.category(ch)
    if cat == "Nd":
        return NUMERIC
    if cat[0] == "L" or cat == "Nl":
        return LETTER
    if cat in ("Mn", "Mc", "Me", "Cf") or cp == 0x200D:
        return EXTEND
    if cat == "So" and (0x1F000 <= cp <= 0x1FAFF or 0x2600 <= cp <= 0x27BF):
        return EMOJI
    return OTHER


_AH = (LETTER, HANGUL)
_TOKEN_TYPE = {
    HAN: "<IDEOGRAPHIC>",
    HIRAGANA: "<HIRAGANA>",
    KATAKANA: "<KATAKANA>",
    EMOJI: "<EMOJI>",
}
MAX_TOKEN_LENGTH = 255


def _joins(prev: str, cur: str, nxt: str | None, prev2: str | None) -> bool:
    """UAX #29: no break between `prev` and `cur` (WB5-WB13b); nxt/prev2 are the neighbours for WB6/7, 11/12."""
    if prev in _AH and cur in _AH:  # WB5
        return True
    if prev in _AH and cur in (MID_LETTER, MID_NUM_LET, SINGLE_QUOTE) and nxt in _AH:  # WB6
        return True
    if prev in (MID_LETTER, MID_NUM_LET, SINGLE_QUOTE) and cur in _AH and prev2 in _AH:  # WB7
        return True
    if (prev, cur) in ((NUMERIC, NUMERIC), (LETTER, NUMERIC), (HANGUL, NUMERIC), (NUMERIC, LETTER)):  # WB8-10
        return True
    if (prev, cur) == (NUMERIC, HANGUL):
        return True
    if prev == NUMERIC and cur in (MID_NUM, MID_NUM_LET, SINGLE_QUOTE) and nxt == NUMERIC:  # WB12
        return True
    if prev in (MID_NUM, MID_NUM_LET, SINGLE_QUOTE) and cur == NUMERIC and prev2 == NUMERIC:  # WB11
        return True
    if prev == KATAKANA and cur == KATAKANA:  # WB13
        return True
    if prev in (*_AH, NUMERIC, KATAKANA, EXTEND_NUM_LET) and cur == EXTEND_NUM_LET:  # WB13a
        return True
    return prev == EXTEND_NUM_LET and cur in (*_AH, NUMERIC, KATAKANA)  # WB13b


def _segment_type(classes: list[str]) -> str | None:
    """Lucene's token type of a segment, or None when the segment is not a word (spaces, punctuation)."""
    kinds = set(classes) - {EXTEND}
    if kinds & {HAN, HIRAGANA, EMOJI}:
        return _TOKEN_TYPE[next(iter(kinds & {HAN, HIRAGANA, EMOJI}))]
    if kinds == {KATAKANA} or kinds == {KATAKANA, EXTEND_NUM_LET}:
        return "<KATAKANA>"
    if kinds == {HANGUL}:
        return "<HANGUL>"
    if kinds & {LETTER, HANGUL, KATAKANA}:
        return "<ALPHANUM>"
    if NUMERIC in kinds:
        return "<NUM>"
    return None


def standard_tokenize(text: str) -> list[Token]:
    chars = list(text)
    classes = [_wb_class(c) for c in chars]
    # WB4: Extend and Format characters attach to what precedes them (they take its class for the rules)
    eff = classes[:]
    for i in range(1, len(eff)):
        if classes[i] == EXTEND and eff[i - 1] not in (OTHER,):
            eff[i] = eff[i - 1]
    tokens: list[Token] = []
    start = 0
    n = len(chars)
    for i in range(1, n + 1):
        if i < n:
            if classes[i] == EXTEND and eff[i - 1] != OTHER:
                continue
            j = i - 1
            prev2 = eff[j - 1] if j > 0 else None
            nxt = next((eff[k] for k in range(i + 1, n) if classes[k] != EXTEND), None)
            if eff[j] not in (HAN, HIRAGANA, EMOJI) and _joins(eff[j], eff[i], nxt, prev2):
                continue
        seg_type = _segment_type(classes[start:i])
        if seg_type is not None:
            for s in range(start, i, MAX_TOKEN_LENGTH):  # longer tokens are split at max_token_length
                e = min(i, s + MAX_TOKEN_LENGTH)
                tokens.append(Token(text[s:e], seg_type, s, e))
        start = i
    return tokens


# --- token filters ----------------------------------------------------------------------------------------------
def cjk_width(tokens: list[Token]) -> list[Token]:
    """Full-width ASCII variants → basic Latin; half-width katakana → full-width (voiced marks composed)."""
    out = []
    for t in tokens:
        chars = []
        kana = False
        for ch in t.text:
            cp = ord(ch)
            if 0xFF01 <= cp <= 0xFF5E:
                chars.append(chr(cp - 0xFEE0))
            elif 0xFF65 <= cp <= 0xFF9F:
                chars.append(unicodedata.normalize("NFKC", ch))
                kana = True
            else:
                chars.append(ch)
        text = "".join(chars)
        if kana:
            text = unicodedata.normalize("NFC", text)
        out.append(Token(text, t.type, t.start, t.end) if text != t.text else t)
    return out


def _lower(ch: str) -> str:
    lo = ch.lower()
    return lo if len(lo) == 1 else lo[0]  # Java's Character.toLowerCase maps one code point to one


def lowercase(tokens: list[Token]) -> list[Token]:
    return [Token("".join(map(_lower, t.text)), t.type, t.start, t.end) for t in tokens]


CJK_TYPES = {"han": "<IDEOGRAPHIC>", "hiragana": "<HIRAGANA>", "katakana": "<KATAKANA>", "hangul": "<HANGUL>"}


def cjk_bigram(tokens: list[Token], ignored_scripts: frozenset[str] = frozenset()) -> list[Token]:
    """Lucene's CJKBigramFilter without unigrams: consecutive CJK tokens whose offsets touch form one run; a run of
    two or more characters becomes its overlapping bigrams, a run of one stays a unigram."""
    bigram_types = {v for k, v in CJK_TYPES.items() if k not in ignored_scripts}
    out: list[Token] = []
    run: list[tuple[str, int, int]] = []  # (character, start, end)

    def flush() -> None:
        if len(run) == 1:
            ch, s, e = run[0]
            out.append(Token(ch, "<SINGLE>", s, e))
        for (a, s, _), (b, _, e) in zip(run, run[1:]):
            out.append(Token(a + b, "<DOUBLE>", s, e))
        run.clear()

    for t in tokens:
        if t.type not in bigram_types:
            flush()
            out.append(t)
            continue
        if run and t.start != run[-1][2]:
            flush()
        if len(t.text) == t.end - t.start:  # a character per offset: each keeps its own
            run.extend((ch, t.start + i, t.start + i + 1) for i, ch in enumerate(t.text))
        else:  # a filter changed the length (half-width kana composed): the characters share the token's span
            run.extend((ch, t.start, t.end) for ch in t.text)
    flush()
    return out


# WordDelimiterIterator's character types
_LOWER, _UPPER, _DIGIT, _DELIM = 1, 2, 4, 8
_ALPHA = _LOWER | _UPPER


@lru_cache(maxsize=65536)
def _wd_type(ch: str) -> int:
    cat = unicodedata.category(ch)
    if cat == "Lu":
        return _UPPER
    if cat == "Ll":
        return _LOWER
    if cat in ("Lt", "Lm", "Lo", "Mn", "Me", "Mc"):
        return _ALPHA
    if cat in ("Nd", "Nl", "No"):
        return _DIGIT
    return _DELIM


@dataclass(frozen=True)
class WordDelimiter:
    generate_word_parts: bool = True
    generate_number_parts: bool = True
    split_on_case_change: bool = True
    split_on_numerics: bool = True
    stem_english_possessive: bool = True

    def _is_break(self, last: int, cur: int) -> bool:  # WordDelimiterIterator.isBreak
        if cur & last:
            return False
        if not self.split_on_case_change and last & _ALPHA and cur & _ALPHA:
            return False
        if last & _UPPER and cur & _ALPHA:
            return False
        return not (
            not self.split_on_numerics
            and ((last & _ALPHA and cur & _DIGIT) or (last & _DIGIT and cur & _ALPHA))
        )

    def _subwords(self, text: str) -> list[str]:
        parts: list[str] = []
        i, n = 0, len(text)
        while i < n:
            if _wd_type(text[i]) == _DELIM:
                i += 1
                continue
            j = i + 1
            while (
                j < n
                and _wd_type(text[j]) != _DELIM
                and not self._is_break(_wd_type(text[j - 1]), _wd_type(text[j]))
            ):
                j += 1
            parts.append(text[i:j])
            # a trailing 's (English possessive) is dropped: "Neil's" → Neil
            if (
                self.stem_english_possessive
                and j + 1 < n
                and text[j] == "'"
                and text[j + 1] in "sS"
                and (j + 2 == n or _wd_type(text[j + 2]) == _DELIM)
            ):
                j += 2
            i = j
        return parts

    def __call__(self, tokens: list[Token]) -> list[Token]:
        out: list[Token] = []
        for t in tokens:
            for part in self._subwords(t.text):
                is_number = _wd_type(part[0]) == _DIGIT
                if (is_number and self.generate_number_parts) or (not is_number and self.generate_word_parts):
                    out.append(Token(part, "<ALPHANUM>" if part != t.text else t.type, t.start, t.end))
        return out


# --- analyzers from index settings -----------------------------------------------------------------------------
TokenFilter = Callable[[list[Token]], list[Token]]


@dataclass(frozen=True)
class Analyzer:
    filters: tuple[TokenFilter, ...]

    def tokens(self, text: str) -> list[Token]:
        toks = standard_tokenize(text)
        for f in self.filters:
            toks = f(toks)
        return toks

    def terms(self, text: str) -> list[str]:
        """The indexed terms, one per position (every filter here keeps position increments at 1)."""
        return [t.text for t in self.tokens(text)]


STANDARD = Analyzer((lowercase,))
_BUILTIN_FILTERS: dict[str, TokenFilter] = {
    "lowercase": lowercase,
    "cjk_width": cjk_width,
    "cjk_bigram": cjk_bigram,
    "word_delimiter_graph": WordDelimiter(),
}
_WDG_SUPPORTED = {
    "generate_word_parts",
    "generate_number_parts",
    "split_on_case_change",
    "split_on_numerics",
    "stem_english_possessive",
}
# options accepted only at the value that keeps one token per position (the fake has no token graphs)
_WDG_FIXED = {
    "preserve_original": False,
    "catenate_all": False,
    "catenate_words": False,
    "catenate_numbers": False,
    "adjust_offsets": True,
    "ignore_keywords": False,
}


def _bool(v: Any, where: str) -> bool:
    if isinstance(v, bool):
        return v
    if v in ("true", "false"):
        return v == "true"
    raise EsError(
        400,
        "illegal_argument_exception",
        f"Failed to parse value [{v}] as only [true] or [false] are allowed. ({where})",
    )


def _custom_filter(name: str, spec: dict[str, Any]) -> TokenFilter:
    kind = spec.get("type")
    opts = {k: v for k, v in spec.items() if k != "type"}
    if kind == "word_delimiter_graph":
        for k, v in opts.items():
            if k in _WDG_FIXED:
                if _bool(v, k) != _WDG_FIXED[k]:
                    not_implemented(f"word_delimiter_graph option [{k}: {v}] (filter [{name}])")
            elif k not in _WDG_SUPPORTED:
                not_implemented(f"word_delimiter_graph option [{k}] (filter [{name}])")
        return WordDelimiter(**{k: _bool(v, k) for k, v in opts.items() if k in _WDG_SUPPORTED})
    if kind == "cjk_bigram":
        for k, v in opts.items():
            if k == "output_unigrams":
                if _bool(v, k):
                    not_implemented(f"cjk_bigram option [output_unigrams: true] (filter [{name}])")
            elif k != "ignored_scripts":
                not_implemented(f"cjk_bigram option [{k}] (filter [{name}])")
        ignored = frozenset(opts.get("ignored_scripts", []))
        if ignored - CJK_TYPES.keys():
            raise EsError(
                400, "illegal_argument_exception", f"unknown script in ignored_scripts: {sorted(ignored)}"
            )
        return lambda toks: cjk_bigram(toks, ignored)
    if kind in ("lowercase", "cjk_width") and not opts:
        return _BUILTIN_FILTERS[kind]
    return not_implemented(f"token filter [{name}] of type [{kind}] with {sorted(opts)}")


def build_analyzers(analysis: dict[str, Any]) -> dict[str, Analyzer]:
    """The analyzers of `settings.analysis`, plus the built-in `standard`; refuses what the fake does not model."""
    for section in analysis:
        if section not in ("analyzer", "filter"):
            not_implemented(f"analysis section [{section}]")
    filters = dict(_BUILTIN_FILTERS)
    for name, spec in analysis.get("filter", {}).items():
        filters[name] = _custom_filter(name, spec)
    analyzers = {"standard": STANDARD}
    for name, spec in analysis.get("analyzer", {}).items():
        if spec.get("type", "custom") != "custom":
            not_implemented(f"analyzer type [{spec.get('type')}] (analyzer [{name}])")
        extra = set(spec) - {"type", "tokenizer", "filter"}
        if extra:
            not_implemented(f"analyzer options {sorted(extra)} (analyzer [{name}])")
        if spec.get("tokenizer") != "standard":
            not_implemented(f"tokenizer [{spec.get('tokenizer')}] (analyzer [{name}])")
        chain = []
        for f in spec.get("filter", []):
            if f not in filters:
                raise EsError(400, "illegal_argument_exception", f"failed to find filter under name [{f}]")
            chain.append(filters[f])
        analyzers[name] = Analyzer(tuple(chain))
    return analyzers
