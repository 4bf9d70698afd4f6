"""The verdict line of an LLM critic's answer: ``Verdict: Good|Normal|Bad`` (pointwise) or ``Verdict: A|B|Tie``.

Pure functions. A critic is asked one question per dimension, to reason first and end with the verdict line; the
parser is strict about what counts as a verdict and lenient about decoration:

- case, markdown (``**Verdict:** **B**``, ``### Verdict: Tie``, bullets, quotes, brackets), ``Final verdict``,
  ``My verdict is: A`` and text after the verdict word (``Verdict: Good. The clip ...``) are accepted;
- no verdict line (refusals, rambling), a word outside the allowed set (``Verdict: N/A``), several verdicts on one
  line (``Verdict: A or B``, the template echoed back ``Good|Normal|Bad``) or verdict lines that disagree are
  unparseable: :class:`CriticParseError`, which keeps the raw text.

The reason returned is the reasoning before the verdict line (whitespace collapsed, at most ``MAX_REASON`` chars).
"""

from __future__ import annotations

import re

from .base import CriticParseError

MAX_REASON = 500
_LINE = re.compile(
    r"^[\s>#*_\-+•]*(?:(?:final|my|overall)\s+)?verdict(?:\s+is)?[\s*_]*[:=][\s*_\"'`\[(]*([a-z/|]+)[*_\"'`\])]*(.*)$",
    re.IGNORECASE,
)
_ANYWHERE = re.compile(r"\bverdict(?:\s+is)?[\s*_]*[:=][\s*_\"'`\[(]*([a-z]+)\b", re.IGNORECASE)
_ALTERNATIVE = r"^\s*(?:/|\||or\b|and\b|vs\.?)\s*[*_\"'`]*\s*({})\b"


def parse_verdict(text: str, allowed: tuple[str, ...]) -> tuple[str, str]:
    """(verdict, reason) from an answer ending with a verdict line; :class:`CriticParseError` when there is none."""
    if not isinstance(text, str) or not text.strip():
        raise CriticParseError("empty answer", text or "")
    canon = {a.lower(): a for a in allowed}
    alternative = re.compile(_ALTERNATIVE.format("|".join(re.escape(a) for a in allowed)), re.IGNORECASE)
    found: list[tuple[int, str]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _LINE.match(line)
        if not m:
            continue
        word, rest = m.group(1), m.group(2)
        words = [w for w in re.split(r"[/|]", word) if w]
        if len(words) != 1 or alternative.search(rest):
            raise CriticParseError(f"several verdicts named in {line.strip()!r}", text)
        if words[0].lower() not in canon:
            raise CriticParseError(f"verdict {words[0]!r} is not one of {'/'.join(allowed)}", text)
        found.append((i, canon[words[0].lower()]))
    if not found:
        raise CriticParseError(f"no 'Verdict: {'|'.join(allowed)}' line", text)
    named = {canon[w.lower()] for w in _ANYWHERE.findall(text) if w.lower() in canon}  # also mid-line mentions
    if len({v for _, v in found} | named) > 1:
        raise CriticParseError(f"verdicts disagree ({', '.join(sorted({v for _, v in found} | named))})", text)
    reason = " ".join(" ".join(lines[: found[0][0]]).split())
    return found[-1][1], reason[:MAX_REASON]
