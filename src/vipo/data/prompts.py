"""Prompt files: UTF-8 text, one prompt per line; blank lines and lines starting with ``#`` are skipped.

:func:`parse_prompts` is pure (bytes in, prompts out) and names the file and line of whatever it refuses: bytes that
are not UTF-8, control characters, a file with no prompt. A line longer than ``MAX_CHARS`` is cut there with a
warning; :func:`warn_long` warns about prompts longer than the model's text encoder reads (it truncates them).

Prompt suites (``vipo prompts``): :func:`import_prompts` reads txt, JSON, JSONL, CSV, VBench's suite and VidProM files,
skipping bad lines and naming each by file and line; :func:`build_suite` combines categories at random (seeded) and
expands each combination with a local instruction LLM (:class:`LLMExpander`) or the templates, then removes exact and
near-duplicates (:func:`dedupe`) and keeps prompts within the word limits.
"""

from __future__ import annotations

import logging
import unicodedata
from pathlib import Path

from ..errors import UserError
from ..io.text import decode_utf8

log = logging.getLogger(__name__)
MAX_CHARS = 2000


_decode = decode_utf8


def parse_prompts(data: bytes, name: str = "<prompts>") -> list[tuple[int, str]]:
    """(line number, prompt) for every prompt in ``data``."""
    out = []
    for n, raw in enumerate(_decode(data, name).splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        bad = next((c for c in line if unicodedata.category(c) in ("Cc", "Cs") and c != "\t"), None)
        if bad is not None:
            raise UserError(f"{name}:{n}: control character {bad!r} in a prompt")
        if len(line) > MAX_CHARS:
            log.warning("%s:%d: prompt of %d characters cut to %d", name, n, len(line), MAX_CHARS)
            line = line[:MAX_CHARS].rstrip()
        out.append((n, line))
    if not out:
        raise UserError(f"{name}: no prompts (one per line; lines starting with # are comments)")
    return out


def read_prompts(path: str | Path, what: str = "prompts") -> list[tuple[int, str]]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path}: file not found")
    return parse_prompts(path.read_bytes(), str(path))


def warn_long(model, prompts: list[str]) -> None:
    """Warn about prompts longer than the text encoder reads; the encoder keeps their first tokens."""
    tok = model.tokenizer
    limit = getattr(tok, "model_max_length", None)
    if tok is None or not isinstance(limit, int) or limit > 100_000:
        return
    for p in dict.fromkeys(prompts):
        n = len(tok(p).input_ids)
        if n > limit:
            log.warning(
                "prompt %r has %d tokens; the text encoder reads the first %d (the rest is cut)",
                p[:60] + ("..." if len(p) > 60 else ""),
                n,
                limit,
            )


# --- prompt suites: importers -------------------------------------------------------------------------------------
# Every importer returns ([(line number, prompt)], [problem, ...]); a problem is "FILE:LINE: reason" for a line that
# was skipped. Formats: txt (one per line), jsonl (objects with a prompt field, or strings), json (a list of the
# same, e.g. VBench's VBench_full_info.json with prompt_en), csv (a header with a prompt column, e.g. VidProM's
# VidProM_unique.csv), vbench (VBench's prompt suite: its txt lists or full-info json) and vidprom (csv or jsonl).
FIELDS = ("prompt", "prompt_en", "text", "caption")
VBENCH_SAMPLES = 5


def _pick(obj, field: str | None) -> str | None:
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        for k in (field,) if field else FIELDS:
            if isinstance(obj.get(k), str):
                return obj[k]
    return None


def _clean(n: int, text, name: str, problems: list[str], what: str = "line") -> tuple[int, str] | None:
    line = " ".join(text.split()) if isinstance(text, str) else ""
    bad = next((c for c in line if unicodedata.category(c) in ("Cc", "Cs")), None)
    reason = "no prompt" if not line else f"control character {bad!r}" if bad else None
    if reason:
        problems.append(f"{name}:{what} {n}: {reason}" if what != "line" else f"{name}:{n}: {reason}")
        return None
    return n, line[:MAX_CHARS]


def import_prompts(path: str | Path, fmt: str | None = None, field: str | None = None):
    import csv
    import io
    import json

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    ext = path.suffix.lower().lstrip(".")
    fmt = fmt or {"jsonl": "jsonl", "json": "json", "csv": "csv"}.get(ext, "txt")
    if fmt in ("vbench", "vidprom"):
        fmt = {"json": "json", "jsonl": "jsonl", "csv": "csv"}.get(ext, "txt" if fmt == "vbench" else "csv")
    name, data, problems, out = str(path), path.read_bytes(), [], []
    if fmt == "txt":
        return parse_prompts(data, name), problems
    text = _decode(data, name)
    if fmt == "jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                problems.append(f"{name}:{n}: not JSON ({e.msg})")
                continue
            got = _pick(obj, field)
            if got is None:
                problems.append(f"{name}:{n}: no {field or '/'.join(FIELDS)} string")
            elif (row := _clean(n, got, name, problems)) is not None:
                out.append(row)
    elif fmt == "json":
        try:
            items = json.loads(text)
        except ValueError as e:
            raise UserError(f"{name}:{e.lineno}: not JSON ({e.msg})") from None
        if not isinstance(items, list):
            raise UserError(f"{name}: expected a JSON list of prompts or objects with a prompt field")
        for n, obj in enumerate(items, 1):
            got = _pick(obj, field)
            if got is None:
                problems.append(f"{name}:item {n}: no {field or '/'.join(FIELDS)} string")
            elif (row := _clean(n, got, name, problems, "item")) is not None:
                out.append(row)
    elif fmt == "csv":
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None) or []
        col = next((header.index(k) for k in ((field,) if field else FIELDS) if k in header), None)
        if col is None:
            raise UserError(f"{name}:1: no {field or '/'.join(FIELDS)} column in the header {header}")
        while True:
            try:
                rec = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                problems.append(f"{name}:{reader.line_num}: bad CSV ({e})")
                continue
            if not rec:
                continue
            if len(rec) != len(header):
                problems.append(f"{name}:{reader.line_num}: {len(rec)} fields, the header has {len(header)}")
            elif (row := _clean(reader.line_num, rec[col], name, problems)) is not None:
                out.append(row)
    else:
        raise UserError(f"--format {fmt!r}: txt, jsonl, json, csv, vbench or vidprom")
    if not out:
        raise UserError(
            f"{name}: no prompts" + (f" ({len(problems)} bad lines; first: {problems[0]})" if problems else "")
        )
    return out, problems


def vbench_file_name(prompt: str, index: int) -> str:
    """VBench's naming of a prompt's samples: ``{prompt}-{index}.mp4``, ``index`` 0..4 (5 samples per prompt)."""
    return f"{prompt}-{index}.mp4"


def vbench_prompt(file_name: str) -> str | None:
    """The prompt of a VBench-named file, or None when the name does not follow ``{prompt}-{index}.mp4``."""
    stem, sep, idx = Path(file_name).stem.rpartition("-")
    return stem if sep and stem and idx.isdigit() else None


# --- prompt suites: building -------------------------------------------------------------------------------------
CATEGORIES = {
    "people": ["a young woman", "an old man", "a child", "a chef", "a dancer", "two friends", "a firefighter"],
    "animals": ["a golden retriever", "a cat", "a horse", "a flock of birds", "a sea turtle", "a fox", "a panda"],
    "actions": ["running", "jumping", "turning around slowly", "playing", "walking", "spinning", "waving"],
    "real scenes": [
        "on a busy city street",
        "in a snowy forest",
        "on a beach at sunset",
        "in a small kitchen",
        "in a rainy alley",
        "on a mountain trail",
        "in a crowded market",
    ],
    "abstract scenes": [
        "inside a swirl of colored smoke",
        "among floating geometric shapes",
        "in a dreamlike void",
        "inside a kaleidoscope",
    ],
    "plants": ["under blooming cherry trees", "in a field of sunflowers", "beside tall bamboo", "among ferns"],
    "vehicles": ["next to a red vintage car", "beside a passing train", "near a sailing boat", "by a bicycle"],
    "styles": [
        "cinematic lighting",
        "in watercolor style",
        "shot on 35mm film",
        "in anime style",
        "with a slow dolly zoom",
        "in high detail, 4k",
    ],
}
SUBJECTS, SETTINGS = ("people", "animals"), ("real scenes", "abstract scenes", "plants", "vehicles")
TEMPLATES = (
    "{subject} {action} {setting}, {style}",
    "{style}: {subject} {action} {setting}",
    "{subject} {setting}, {action}, {style}",
)
INSTRUCTION = (
    "Write one vivid, concrete prompt for a text-to-video model, a single sentence under {max_words} "
    "words, that combines: {parts}. Answer with the prompt only."
)


def combine(rng, categories: dict[str, list[str]] = CATEGORIES) -> dict[str, str]:
    """One random combination: a subject, an action, a setting and a style."""
    return {
        "subject": rng.choice(categories[rng.choice(SUBJECTS)]),
        "action": rng.choice(categories["actions"]),
        "setting": rng.choice(categories[rng.choice(SETTINGS)]),
        "style": rng.choice(categories["styles"]),
    }


def template_expand(combo: dict[str, str], rng) -> str:
    text = rng.choice(TEMPLATES).format(**combo)
    return text[0].upper() + text[1:]


class LLMExpander:
    """Expands a combination into a prompt with a local instruction LLM (transformers; e.g. Qwen2.5-Instruct)."""

    def __init__(
        self,
        model_path: str,
        temperature: float = 0.9,
        top_k: int = 50,
        top_p: float = 0.9,
        max_words: int = 60,
        seed: int = 0,
    ) -> None:
        if not Path(model_path).is_dir():
            raise UserError(f"--llm {model_path}: not a local model folder (no downloads: give a path)")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path).eval()
        self.kw = dict(
            do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=2 * max_words + 16
        )
        self.max_words, self.seed = max_words, seed

    def __call__(self, combo: dict[str, str], rng) -> str:
        import torch

        msg = INSTRUCTION.format(max_words=self.max_words, parts="; ".join(combo.values()))
        ids = self.tok.apply_chat_template(
            [{"role": "user", "content": msg}], add_generation_prompt=True, return_tensors="pt"
        )
        torch.manual_seed(rng.randrange(2**31))
        with torch.no_grad():
            out = self.model.generate(ids, **self.kw)
        return self.tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip().strip('"').splitlines()[0]


def prompt_key(text: str) -> str:
    """What makes two prompts the same prompt: case, spacing and punctuation ignored."""
    return _key(text)


def _key(text: str) -> str:
    return " ".join("".join(c for c in text.casefold() if c.isalnum() or c.isspace()).split())


def _grams(key: str) -> set[str]:
    return {key[i : i + 3] for i in range(max(1, len(key) - 2))}


def dedupe(prompts: list[str], near: float = 0.85) -> list[str]:
    """Drop exact duplicates (case, spacing and punctuation ignored) and near-duplicates: a prompt whose character
    3-gram Jaccard similarity to a kept one is ``near`` or more."""
    kept, keys, grams = [], set(), []
    for p in prompts:
        k = _key(p)
        if k in keys:
            continue
        g = _grams(k)
        if any(len(g & h) / len(g | h) >= near for h in grams):
            continue
        kept.append(p)
        keys.add(k)
        grams.append(g)
    return kept


def build_suite(
    n: int, seed: int = 0, expand=None, min_words: int = 4, max_words: int = 60, near: float = 0.85, max_tries: int = 20
) -> list[str]:
    """``n`` prompts from random category combinations (seeded), expanded by ``expand`` (default: the templates),
    deduplicated and within the length limits; fewer (with a warning) when ``max_tries * n`` draws do not suffice."""
    import random

    rng, expand, out = random.Random(seed), expand or template_expand, []
    for _ in range(max_tries * n):
        if len(out) >= n:
            break
        text = " ".join(expand(combine(rng), rng).split())
        if min_words <= len(text.split()) <= max_words:
            out = dedupe(out + [text], near)
    if len(out) < n:
        log.warning("prompt suite: %d distinct prompts after %d draws (asked for %d)", len(out), max_tries * n, n)
    return out
