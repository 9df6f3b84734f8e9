"""Words that agree with their number, for messages and reports: "1 case", "2 cases", "an int".

>>> count(1, "case"), count(3, "intensity"), count(1_000, "image")
('1 case', '3 intensities', '1,000 images')
>>> a_type(3), a_type([1])
('an int', 'a list')
"""

from __future__ import annotations

from typing import Any

__all__ = ["a_type", "count", "plural"]

#: Plurals that adding "s" gets wrong (the nouns the reports and messages count).
_IRREGULAR = {"intensity": "intensities", "index": "indices", "matrix": "matrices", "axis": "axes"}


def plural(n: float, noun: str) -> str:
    """``noun`` agreeing with the number ``n`` (singular for exactly 1)."""
    if n == 1:
        return noun
    return _IRREGULAR.get(noun, noun + ("es" if noun.endswith(("s", "x", "sh", "ch")) else "s"))


def count(n: float, noun: str) -> str:
    """``n`` and ``noun`` agreeing with it, thousands separated: ``count(1, "case") == "1 case"``."""
    return f"{n:,} {plural(n, noun)}"


def a_type(value: Any) -> str:
    """The type name of ``value`` with its article: "an int", "a str"."""
    name = type(value).__name__
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name
