"""The language codes a prompt may name (`PromptRecord.language`) and the writing systems
(Unicode scripts) each is written in: the schema checks codes against it, the
language-consistency reward counts a chain of thought's words in those scripts."""

from __future__ import annotations

_LATIN = (
    "af az ca cs cy da de en es et eu fi fil fr ga gl hr hu id is it lt lv ms mt nl no nb nn pl "
    "pt ro sk sl sq sv sw tl tr uz vi yo zu"
)
_CYRILLIC = "be bg kk ky mk mn ru tg uk"
_ARABIC = "ar fa ps ur"

LANGUAGE_SCRIPTS: dict[str, set[str]] = {
    **{code: {"Latin"} for code in _LATIN.split()},
    **{code: {"Cyrillic"} for code in _CYRILLIC.split()},
    **{code: {"Arabic"} for code in _ARABIC.split()},
    "sr": {"Cyrillic", "Latin"},
    "zh": {"Han"},
    "ja": {"Han", "Hiragana", "Katakana"},
    "ko": {"Hangul", "Han"},
    "el": {"Greek"},
    "he": {"Hebrew"},
    "yi": {"Hebrew"},
    "hi": {"Devanagari"},
    "mr": {"Devanagari"},
    "ne": {"Devanagari"},
    "bn": {"Bengali"},
    "pa": {"Gurmukhi"},
    "gu": {"Gujarati"},
    "ta": {"Tamil"},
    "te": {"Telugu"},
    "kn": {"Kannada"},
    "ml": {"Malayalam"},
    "si": {"Sinhala"},
    "th": {"Thai"},
    "lo": {"Lao"},
    "km": {"Khmer"},
    "my": {"Myanmar"},
    "ka": {"Georgian"},
    "hy": {"Armenian"},
    "am": {"Ethiopic"},
}
