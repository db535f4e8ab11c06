"""The words a gap is about, and whether a sentence uses them.

The factory names a new specialist, writes its playbook conditions and judges its persona text
by the gap's own vocabulary: the content words of the gap's text and evidence, its component,
its facts, the actions and the hand-off partners. A sentence that uses none of them is filler.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_TOKEN = re.compile(r"[a-z][a-z0-9]*(?:[-_.][a-z0-9]+)*|\d{2,}")
# English function words and the vague words of operations prose: present in any gap, they tell
# nothing about this one.
_COMMON = """
a about above after again against all also an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers him his how i if in into is it its itself just me more most my no nor not
now of off on once only or other our out over own same she should so some such than that the their
them then there these they this those through to too under until up very was we were what when
where which while who whom why will with would you your yet per via it's get gets got make makes
made keep keeps kept leave leaves left take takes go goes went come comes see seen seems still ever
never always often sometimes every many much lot lots thing things stuff issue issues problem
problems system systems service services app apps application applications user users time times
job jobs work works working run runs running need needs able way ways new old good bad well like
"""
STOPWORDS = frozenset(_COMMON.split())


def stem(word: str) -> str:
    """A crude English stem, enough to match "segments" with "segment" and "queries" with "query"."""
    w = word.lower()
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3 and not w.endswith("ss"):
            return w[: len(w) - len(suffix)] + repl
    return w


def tokens(text: str) -> list[str]:
    """Lower-case word tokens; hyphenated and dotted names ("search-index", "web.conf") stay whole."""
    return _TOKEN.findall(text.lower())


def content_terms(text: str) -> list[str]:
    """The words of `text` that carry meaning, in order of first appearance, each once."""
    seen: dict[str, None] = {}
    for token in tokens(text):
        if token in STOPWORDS or (len(token) < 3 and not token.isdigit()):
            continue
        seen.setdefault(token, None)
    return list(seen)


def distinctive_terms(text: str, known: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """Content words of `text` that the known vocabulary (existing personas) does not use.

    Numbers are left out: they fold in fingerprints and say nothing about the kind of gap; so are
    the `exclude` words, whatever else happens. Falls back to all content words when every one of
    them is known.
    """
    known_stems = {stem(t) for t in known}
    dropped = {stem(t) for t in exclude}
    words = [t for t in content_terms(text) if not t.isdigit() and stem(t) not in dropped]
    fresh = [t for t in words if stem(t) not in known_stems]
    return fresh or words


class Vocabulary:
    """Terms a sentence must use to be specific to a gap; matching is by stem and by word part.

    Args:
        words: The gap's own words (text, evidence, component): a hyphenated one also counts by
            its parts, so "search-index" makes "index" specific.
        names: Fact, action and persona names: they count only whole ("slow_response", not
            "response"), since their parts are everyday words.
    """

    def __init__(self, words: Iterable[str], names: Iterable[str] = ()) -> None:
        stems: set[str] = set()
        for term in words:
            for token in tokens(term):
                parts = [token, *re.split(r"[-_.]", token)]
                stems.update(stem(p) for p in parts if p not in STOPWORDS and (len(p) >= 3 or p.isdigit()))
        stems.update(stem(name.lower()) for name in names if name)
        self.stems = frozenset(stems)

    def hits(self, sentence: str) -> list[str]:
        """The words of a sentence that are terms (by stem; a hyphenated word also by its parts)."""
        found: list[str] = []
        for token in tokens(sentence.replace("`", " ")):
            parts = [token, *re.split(r"[-_.]", token)] if re.search(r"[-_.]", token) else [token]
            if any(stem(p) in self.stems for p in parts):
                found.append(token)
        return found

    def __contains__(self, sentence: object) -> bool:
        return isinstance(sentence, str) and bool(self.hits(sentence))
