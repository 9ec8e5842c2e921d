"""Query analysis shared by the search backends: words, synonyms, typo candidates, exact ids.

A query becomes a small tree (``QueryPlan``): every query word must match (AND), each through
one of its alternatives (OR): the word itself, a spelling correction, or a synonym from
``synonyms.txt``. A multi-word synonym is a phrase. Stemming is left to the database (SQLite
FTS5's ``porter`` tokenizer, PostgreSQL's ``english`` configuration) so that documents and
queries are stemmed by the same code; this module only needs a light plural rule to match
synonym rules ("stockings" matches a rule written "stocking").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

from ..gtin import is_valid_gtin, normalise_gtin

SYNONYMS_PATH = Path(__file__).with_name("synonyms.txt")
MAX_QUERY_WORDS = 12
MIN_TYPO_LENGTH = 4  # shorter words are too ambiguous to correct
MAX_CORRECTIONS = 3

# Words that carry no meaning in a product search. Documents keep them (phrases stay intact);
# queries drop them so "gloves for surgery" means "gloves surgery".
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "the",
        "to",
        "with",
        "without",
    ]
)
WORD = re.compile(r"[^\W_]+")  # a word as SQLite's unicode61 tokenizer sees one


def fold(text: str) -> str:
    """Lower case, accents removed ("Bébé" → "bebe")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def words(text: str) -> list[str]:
    """The words of a text as SQLite's unicode61 tokenizer sees them: runs of letters/digits."""
    return WORD.findall(fold(text))


def query_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in STOPWORDS][:MAX_QUERY_WORDS]


def light_stem(word: str) -> str:
    """Plural to singular, enough to match synonym rules (not a full stemmer)."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def vocabulary_words(*texts: str | None) -> set[str]:
    """The words worth keeping for spelling correction: alphabetic, at least 4 letters."""
    found: set[str] = set()
    for text in texts:
        if text:
            found.update(
                w for w in words(text) if len(w) >= MIN_TYPO_LENGTH and w.isalpha() and len(w) <= 64
            )
    return found


# --- exact identifiers ------------------------------------------------------------------------


def gtin_in_query(q: str) -> str | None:
    """The query as a 14-digit GTIN when it is one (8/12/13/14 digits, valid check digit;
    spaces and hyphens ignored)."""
    compact = re.sub(r"[\s\-]", "", q)
    if is_valid_gtin(compact):
        return normalise_gtin(compact)
    return None


def mpn_key(value: str | None) -> str | None:
    """A manufacturer part number compared loosely: upper case, letters and digits only."""
    if not value:
        return None
    key = re.sub(r"[^0-9A-Z]", "", fold(value).upper())
    return key[:100] if len(key) >= 3 else None


# --- synonyms -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynonymRule:
    """``sources`` match the query; ``targets`` are searched for instead (explicit rules) or as
    well (equivalence groups, where sources == targets)."""

    sources: tuple[tuple[str, ...], ...]
    targets: tuple[tuple[str, ...], ...]
    explicit: bool


@dataclass(frozen=True)
class Synonyms:
    rules: tuple[SynonymRule, ...]
    lines: tuple[str, ...]  # the rule lines as written (for Elasticsearch's synonym_graph)

    @cached_property
    def vocabulary(self) -> frozenset[str]:
        return frozenset(
            w for rule in self.rules for phrase in rule.sources + rule.targets for w in phrase
        )

    @cached_property
    def rule_index(self) -> dict[tuple[str, ...], list[SynonymRule]]:
        """Rules by the light-stemmed words of each source phrase."""
        found: dict[tuple[str, ...], list[SynonymRule]] = {}
        for rule in self.rules:
            for source in rule.sources:
                found.setdefault(tuple(light_stem(w) for w in source), []).append(rule)
        return found


def _phrase(text: str) -> tuple[str, ...]:
    return tuple(w for w in words(text) if w not in STOPWORDS)


def parse_synonyms(text: str) -> Synonyms:
    """Parse Solr-format synonyms. Raises ValueError naming the line for a malformed rule."""
    rules: list[SynonymRule] = []
    lines: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.count("=>") > 1:
            raise ValueError(f"synonyms line {number}: more than one '=>'")
        if "=>" in line:
            left, right = line.split("=>")
            sources = tuple(p for p in (_phrase(x) for x in left.split(",")) if p)
            targets = tuple(p for p in (_phrase(x) for x in right.split(",")) if p)
            explicit = True
        else:
            sources = targets = tuple(p for p in (_phrase(x) for x in line.split(",")) if p)
            explicit = False
        if not sources or not targets or (not explicit and len(sources) < 2):
            raise ValueError(f"synonyms line {number}: a rule needs at least two terms")
        rules.append(SynonymRule(sources=sources, targets=targets, explicit=explicit))
        lines.append(line)
    return Synonyms(rules=tuple(rules), lines=tuple(lines))


@lru_cache(maxsize=4)
def load_synonyms(path: Path = SYNONYMS_PATH) -> Synonyms:
    return parse_synonyms(path.read_text(encoding="utf-8"))


# --- the query plan -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Phrase:
    """Words that must appear together, in order (one word is a phrase of one)."""

    words: tuple[str, ...]


@dataclass(frozen=True)
class AnyOf:
    options: tuple[Node, ...]


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Node, ...]


Node = Phrase | AnyOf | AllOf


def _stems(phrase: Phrase) -> tuple[str, ...]:
    return tuple(light_stem(w) for w in phrase.words)


def _within(part: tuple[str, ...], whole: tuple[str, ...]) -> bool:
    return any(whole[i : i + len(part)] == part for i in range(len(whole) - len(part) + 1))


def _covers(general: Node, specific: Node) -> bool:
    """Every text matching ``specific`` also matches ``general`` (so ``specific`` adds nothing
    to an OR). Only the simple shapes the plan builds are recognised."""
    if isinstance(general, Phrase):
        g = _stems(general)
        if isinstance(specific, Phrase):
            return _within(g, _stems(specific))
        if isinstance(specific, AllOf):
            return any(isinstance(p, Phrase) and _within(g, _stems(p)) for p in specific.parts)
        return False
    if isinstance(general, AllOf) and isinstance(specific, Phrase):
        return all(
            isinstance(p, Phrase) and _within(_stems(p), _stems(specific)) for p in general.parts
        )
    return False


def _any(options: Iterable[Node]) -> Node:
    # "gloves" OR "examination gloves" matches what "gloves" alone does: keep the query small
    # (each alternative costs the full-text index a posting list, a phrase its positions too).
    # The first option (what was typed) always stays, so it still ranks its own matches first.
    kept: list[Node] = []
    for option in options:
        if any(_covers(k, option) for k in kept):
            continue
        kept = [k for n, k in enumerate(kept) if n == 0 or not _covers(option, k)]
        kept.append(option)
    return kept[0] if len(kept) == 1 else AnyOf(tuple(kept))


def _all(parts: list[Node]) -> Node:
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


Corrector = Callable[[list[str]], dict[str, list[str]]]


def no_corrections(_words: list[str]) -> dict[str, list[str]]:
    return {}


def typo_candidates(query: list[str], synonyms: Synonyms) -> list[str]:
    """Query words that a corrector may look at: alphabetic, long enough, not a synonym term."""
    known = synonyms.vocabulary
    return [
        w
        for w in dict.fromkeys(query)
        if len(w) >= MIN_TYPO_LENGTH and w.isalpha() and w not in known
    ]


def build_plan(q: str, synonyms: Synonyms, corrector: Corrector = no_corrections) -> Node | None:
    """The query tree for ``q``, or None when it has no searchable word."""
    query = query_words(q)
    if not query:
        return None
    corrections = corrector(typo_candidates(query, synonyms)) if corrector else {}
    forms = [[w, *corrections.get(w, [])] for w in query]
    keys = [{light_stem(f) for f in word_forms} for word_forms in forms]
    rules = synonyms.rule_index
    longest = max((len(k) for k in rules), default=0)

    def word_node(i: int) -> Node:
        return _any(Phrase((f,)) for f in forms[i])

    parts: list[Node] = []
    i = 0
    while i < len(query):
        matched: tuple[int, list[SynonymRule]] | None = None
        for n in range(min(longest, len(query) - i), 0, -1):
            candidates = [
                rule_list
                for key, rule_list in rules.items()
                if len(key) == n and all(key[j] in keys[i + j] for j in range(n))
            ]
            if candidates:
                matched = (n, [r for rule_list in candidates for r in rule_list])
                break
        if matched is None:
            parts.append(word_node(i))
            i += 1
            continue
        n, matched_rules = matched
        original = _all([word_node(i + j) for j in range(n)])
        options: list[Node] = []
        if not all(rule.explicit for rule in matched_rules):
            options.append(original)
        for rule in matched_rules:
            options.extend(Phrase(target) for target in rule.targets)
        parts.append(_any(options))
        i += n
    return _all(parts)


# --- edit distance --------------------------------------------------------------------------------

_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def edits1(word: str) -> set[str]:
    """Every string one edit away (delete, transpose, replace, insert; Damerau's four)."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletes = [a + b[1:] for a, b in splits if b]
    transposes = [a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1]
    replaces = [a + c + b[1:] for a, b in splits if b for c in _ALPHABET if c != b[0]]
    inserts = [a + c + b for a, b in splits for c in _ALPHABET]
    return set(deletes + transposes + replaces + inserts)


def allowed_edits(word: str) -> int:
    return 1 if len(word) < 8 else 2


def osa_distance(a: str, b: str, limit: int = 2) -> int:
    """Optimal string alignment distance (Levenshtein plus adjacent transpositions); returns
    ``limit + 1`` as soon as the distance is known to exceed ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            cost = 0 if ca == cb else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return previous[-1]


def best_corrections(word: str, candidates: Iterable[str]) -> list[str]:
    """The closest candidates within the allowed distance, closest first (ties: alphabetical,
    which is stable and has nothing to do with who sells what)."""
    limit = allowed_edits(word)
    scored = sorted(
        (d, c)
        for c in set(candidates)
        if c != word and (d := osa_distance(word, c, limit)) <= limit
    )
    return [c for _d, c in scored[:MAX_CORRECTIONS]]
