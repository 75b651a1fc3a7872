"""The bundle's one language pair as LibreTranslate presents languages, and language detection.

Detection: a bundle translates from one source language, so "detecting" can only answer that
language; what is honest to vary is the confidence. It is the share of the text's letters that are
in the source language's writing system (e.g. Latin for en/de, Cyrillic for ru), 0-100. That
heuristic cannot tell two languages of one script apart (English from German): a German text sent to
an en→de server still reads as English with high confidence. Text without letters gets 0.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

NAMES = {
    "ar": "Arabic", "bg": "Bulgarian", "ca": "Catalan", "cs": "Czech", "da": "Danish", "de": "German",
    "el": "Greek", "en": "English", "es": "Spanish", "et": "Estonian", "fa": "Persian", "fi": "Finnish",
    "fr": "French", "ga": "Irish", "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian", "id": "Indonesian",
    "it": "Italian", "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian", "nb": "Norwegian",
    "nl": "Dutch", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sk": "Slovak",
    "sl": "Slovenian", "sv": "Swedish", "th": "Thai", "tr": "Turkish", "uk": "Ukrainian", "zh": "Chinese",
}
# Unicode character-name prefixes of each non-Latin script; every other language counts as Latin.
SCRIPTS = {
    "ar": ("ARABIC",), "fa": ("ARABIC",), "bg": ("CYRILLIC",), "ru": ("CYRILLIC",), "uk": ("CYRILLIC",),
    "el": ("GREEK",), "he": ("HEBREW",), "hi": ("DEVANAGARI",), "th": ("THAI",),
    "ja": ("HIRAGANA", "KATAKANA", "CJK"), "ko": ("HANGUL",), "zh": ("CJK",),
}


def language_name(code: str) -> str:
    return NAMES.get(code.split("_")[0].split("-")[0].lower(), code)


@dataclass(frozen=True)
class LanguagePair:
    source: str
    target: str

    def languages(self) -> list[dict]:
        """``GET /languages``: every language the server knows, with the targets it reaches from it."""
        return [{"code": self.source, "name": language_name(self.source), "targets": [self.target]},
                {"code": self.target, "name": language_name(self.target), "targets": []}]

    def offer(self) -> str:
        return f"this server translates {self.source} to {self.target} only"

    def check(self, source: str, target: str) -> None:
        """LibreTranslate's ``<code> is not supported`` for a language or pair the bundle lacks."""
        from mtedge.server.errors import bad_request

        if source != "auto" and source != self.source:
            raise bad_request(f"{source} is not supported ({self.offer()})")
        if target != self.target:
            raise bad_request(f"{target} is not supported ({self.offer()})")

    def detect(self, text: str) -> dict:
        return {"confidence": script_confidence(text, self.source), "language": self.source}


def script_confidence(text: str, language: str) -> float:
    prefixes = SCRIPTS.get(language.split("_")[0].split("-")[0].lower(), ("LATIN",))
    letters = matching = 0
    for char in text:
        if not char.isalpha():
            continue
        letters += 1
        name = unicodedata.name(char, "")
        matching += name.startswith(prefixes)
    return round(100.0 * matching / letters, 1) if letters else 0.0
