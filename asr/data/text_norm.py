"""LibriSpeech-style normalization of written English, for the open-vocabulary synthetic corpus.

LibriSpeech's transcripts are upper case A-Z, apostrophes and single spaces: numbers are
spelled out as read, punctuation is gone, hyphenated words are separate words. Written text
that cannot be turned into that form without guessing how a reader would say it (acronyms,
times, fractions, code, URLs) is dropped, with the reason counted, rather than mangled: a
transcript that does not say what the audio says teaches the model noise.
"""

from __future__ import annotations

import re
import unicodedata

_ONES = (
    "ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE THIRTEEN FOURTEEN FIFTEEN "
    "SIXTEEN SEVENTEEN EIGHTEEN NINETEEN"
).split()
_TENS = "_ _ TWENTY THIRTY FORTY FIFTY SIXTY SEVENTY EIGHTY NINETY".split()
_SCALES = ((10**9, "BILLION"), (10**6, "MILLION"), (1000, "THOUSAND"))
_ORDINAL_WORDS = {
    "ONE": "FIRST", "TWO": "SECOND", "THREE": "THIRD", "FIVE": "FIFTH", "EIGHT": "EIGHTH",
    "NINE": "NINTH", "TWELVE": "TWELFTH",
}  # fmt: skip
# Abbreviations whose reading is unambiguous; expanded before sentences are split at periods.
_ABBREVIATIONS = {
    "mr.": "mister", "mrs.": "missus", "dr.": "doctor", "st.": "saint", "jr.": "junior",
    "sr.": "senior", "vs.": "versus", "etc.": "et cetera", "e.g.": "for example", "i.e.": "that is",
    "prof.": "professor", "gen.": "general", "capt.": "captain", "mt.": "mount",
}  # fmt: skip
_ABBR_RE = re.compile(r"(?<![\w.])(" + "|".join(re.escape(a) for a in _ABBREVIATIONS) + r")(?!\w)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]*[A-Z0-9])")
_QUOTES = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "`": "'", "\u00b4": "'", "\u2026": " "}
    | {chr(c): "-" for c in (*range(0x2010, 0x2016), 0x2212)}  # dashes: ranges and compounds as ASCII
)
_DASHES = re.compile(r"-+")
_SPEAKER_LABEL = re.compile(r"^\s*[A-Z][A-Za-z]{0,15}:\s+")  # "Q: ...", "Mother: ..." in dialogues
_MONEY = re.compile(r"\$(\d[\d,]*)(?:\.(\d\d))?(?!\d)")
_PERCENT = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s?%")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_DECIMAL = re.compile(r"(?<![\d.])(\d+)\.(\d+)(?![\d.])")
_INTEGER = re.compile(r"(?<![\d,])(\d{1,3}(?:,\d{3})+|\d+)(?![\d,])")
_NUMBER_FORMAT = re.compile(r"\d[:/-]|[:/-]\d|\d(?!(?:st|nd|rd|th)\b)[A-Za-z]|[A-Za-z]\d")
_EMPHASIS = re.compile(r"(?<![\w*])[*_]+([A-Za-z][A-Za-z' ]*?)[*_]+(?![\w*])")  # *word*, _word_
_ACRONYM = re.compile(r"\b[A-Z]{2,}\b")
_DROP_SYMBOLS = re.compile(r"[@#/\\*_<>|~^{}\[\]=+0-9]")
_PUNCT = re.compile(r"[,;:!?.\"()]+")


def spell_number(n: int) -> str:
    """Cardinal in words as LibriSpeech writes it: 2021 -> TWO THOUSAND TWENTY ONE (no AND)."""
    if n < 0:
        raise ValueError(f"spell_number: negative {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " HUNDRED" + ("" if n % 100 == 0 else " " + spell_number(n % 100))
    for scale, name in _SCALES:
        if n >= scale:
            rest = n % scale
            return spell_number(n // scale) + " " + name + ("" if rest == 0 else " " + spell_number(rest))
    raise AssertionError("unreachable")


def spell_year(n: int) -> str:
    """A year as read aloud: 1984 -> NINETEEN EIGHTY FOUR, 1905 -> NINETEEN OH FIVE, 2005 -> TWO THOUSAND FIVE."""
    hi, lo = divmod(n, 100)
    if 2000 <= n < 2010 or n % 1000 == 0:
        return spell_number(n)
    if lo == 0:
        return spell_number(hi) + " HUNDRED"
    return spell_number(hi) + (" OH " + _ONES[lo] if lo < 10 else " " + spell_number(lo))


def spell_ordinal(n: int) -> str:
    """21 -> TWENTY FIRST, 12 -> TWELFTH, 40 -> FORTIETH."""
    words = spell_number(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("Y"):
        words[-1] = last[:-1] + "IETH"
    else:
        words[-1] = last + "TH"
    return " ".join(words)


def _integer_words(digits: str) -> str:
    n = int(digits.replace(",", ""))
    # Four-digit numbers without a thousands comma in running text are nearly always years.
    if len(digits) == 4 and 1100 <= n <= 2099:
        return spell_year(n)
    return spell_number(n)


def _expand_numbers(s: str) -> str:
    def money(m: re.Match) -> str:
        dollars = int(m.group(1).replace(",", ""))
        out = spell_number(dollars) + (" DOLLAR" if dollars == 1 else " DOLLARS")
        if m.group(2) and int(m.group(2)):
            cents = int(m.group(2))
            out += " AND " + spell_number(cents) + (" CENT" if cents == 1 else " CENTS")
        return f" {out} "

    s = _MONEY.sub(money, s)
    s = _PERCENT.sub(lambda m: f" {m.group(1)} PERCENT ", s)
    s = _ORDINAL.sub(lambda m: f" {spell_ordinal(int(m.group(1)))} ", s)
    s = _DECIMAL.sub(
        lambda m: f" {spell_number(int(m.group(1)))} POINT {' '.join(_ONES[int(d)] for d in m.group(2))} ", s
    )
    return _INTEGER.sub(lambda m: f" {_integer_words(m.group(1))} ", s)


def split_sentences(text: str) -> list[str]:
    """Split running text at sentence ends (. ! ? followed by a capital or digit).

    Known abbreviations are expanded first, so "Mr. Smith" does not end a sentence.
    """
    text = _ABBR_RE.sub(lambda m: _ABBREVIATIONS[m.group(1).lower()], " ".join(text.split()))
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def normalize_sentence(raw: str, min_words: int = 4, max_words: int = 25) -> tuple[str | None, str]:
    """(normalized text, "") or (None, reason it was dropped).

    Rules, in order: Unicode quotes and dashes to ASCII, accents stripped; a dialogue's speaker
    label dropped; abbreviations expanded; acronyms (two or more capitals in a sentence that is
    not all capitals) drop the sentence, since their reading is ambiguous; *emphasis* marks go; money, percentages,
    ordinals, decimals, years and integers spelled out; & -> AND; any other digit or symbol drops
    the sentence; hyphens become spaces, other punctuation goes, apostrophes stay inside words;
    upper case; min_words..max_words words.
    """
    s = unicodedata.normalize("NFKD", raw.translate(_QUOTES))
    s = "".join(c for c in s if not unicodedata.combining(c))
    if any(ord(c) > 127 for c in s):
        return None, "non-ASCII character"
    s = _SPEAKER_LABEL.sub("", " ".join(s.split()))
    s = _ABBR_RE.sub(lambda m: _ABBREVIATIONS[m.group(1).lower()], s)
    if any(c.islower() for c in s) and _ACRONYM.search(s):
        return None, "acronym"
    if _NUMBER_FORMAT.search(s):
        return None, "number format"  # times, ranges, fractions, phone numbers: reading ambiguous
    s = _expand_numbers(_EMPHASIS.sub(r"\1", s).replace("&", " and "))
    if _DROP_SYMBOLS.search(s):
        return None, "digits or symbols"
    s = _DASHES.sub(" ", s)
    if re.search(r"\w\.\w", s):
        return None, "dotted abbreviation"
    s = _PUNCT.sub(" ", s).upper()
    words = [w.strip("'") for w in s.split()]
    words = [w for w in words if w]
    if any(not re.fullmatch(r"[A-Z]+(?:'[A-Z]+)*", w) for w in words):
        return None, "malformed word"
    if not min_words <= len(words) <= max_words:
        return None, "length"
    return " ".join(words), ""
