"""The Label Studio pair: labelling configurations and tasks to import there, and its JSON export read back.

A team that runs Label Studio can label a folder there and come back to vipo for the vote, the agreement and the
critic's data. One project per task (a Label Studio project has one labelling configuration):

- ``label_studio/pairwise_config.xml`` + ``pairwise_tasks.json``: the prompt as a header, the two videos side by
  side (``<Video sync=...>`` keeps them in step), A / B / Tie per dimension (``Choices``, required), a reason per
  dimension (``TextArea``, required), optional issue tags per video;
- ``label_studio/pointwise_config.xml`` + ``pointwise_tasks.json``: one video, Good / Normal / Bad per dimension.

Each task's ``data`` carries ``vipo_item`` (the item id) and the videos' ``DIR``-relative names, so annotations come
back to the right item whatever Label Studio numbered it. Video URLs are ``/data/local-files/?d=<prefix><file>``:
Label Studio serves them from local storage when ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and
``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` is the folder above ``DIR`` (the default prefix is ``DIR``'s name and a
slash); any other prefix (an ``https://`` address of the same files) works the same.

:func:`read_export` reads Label Studio's JSON export (a list of tasks, each with ``data`` and ``annotations``; an
annotation's ``result`` holds ``{"from_name", "type": "choices", "value": {"choices": [...]}}`` and
``{"type": "textarea", "value": {"text": [...]}}`` regions; ``was_cancelled`` marks a skipped task;
``completed_by`` is the user's id, or in some versions an object with ``id`` and ``email``), as documented in Label
Studio's "Task format" and "Export" guides. The videos were shown A on the left, so ``swapped`` is false.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from ..critics.base import DIMENSIONS
from ..errors import UserError
from .items import Item
from .votes import CHOICES, Answer

DEFAULT_TAGS = ("blurry", "flicker", "distorted", "wrong content", "no motion", "artifacts")
QUESTION = {
    "semantic": "Semantic consistency: does it show what the prompt asks for?",
    "fidelity": "Fidelity: is it sharp and clean, free of artifacts?",
    "motion": "Motion: is the motion smooth and plausible?",
}
PAIR_QUESTION = {
    "semantic": "Semantic consistency: which video shows better what the prompt asks for?",
    "fidelity": "Fidelity: which video is sharper and cleaner?",
    "motion": "Motion: which video moves more smoothly and plausibly?",
}


def _choices(name: str, to: str, values: tuple[str, ...], required: bool, multiple: bool = False) -> str:
    kind = "multiple" if multiple else "single-radio"
    body = "".join(f"<Choice value={quoteattr(v)}/>" for v in values)
    req = ' required="true"' if required else ""
    return (
        f'    <Choices name={quoteattr(name)} toName={quoteattr(to)} choice="{kind}" showInline="true"{req}>'
        f"{body}</Choices>\n"
    )


def config_xml(task: str, tags: tuple[str, ...] = DEFAULT_TAGS) -> str:
    """The labelling configuration of one task (``pairwise`` or ``pointwise``)."""
    lines = ["<View>\n", '  <Header value="$prompt"/>\n']
    if task == "pairwise":
        lines += [
            '  <View style="display: flex; gap: 1em;">\n',
            '    <View style="flex: 50%;"><Header value="Video A"/>'
            '<Video name="video_a" value="$video_a" sync="video_b"/>\n',
            _choices("tags_a", "video_a", tags, False, True).replace("    ", "      ", 1),
            "    </View>\n",
            '    <View style="flex: 50%;"><Header value="Video B"/>'
            '<Video name="video_b" value="$video_b" sync="video_a"/>\n',
            _choices("tags_b", "video_b", tags, False, True).replace("    ", "      ", 1),
            "    </View>\n",
            "  </View>\n",
        ]
        target, text = "video_a", PAIR_QUESTION
    else:
        lines += ['  <Video name="video" value="$video"/>\n', _choices("tags", "video", tags, False, True)]
        target, text = "video", QUESTION
    for d in DIMENSIONS:
        lines += [
            f'  <View>\n    <Header value={quoteattr(text[d])} size="5"/>\n',
            _choices(d, target, CHOICES[task], True),
            f'    <TextArea name="{d}_reason" toName="{target}" required="true" maxSubmissions="1" '
            f'rows="2" placeholder="Why? (required)"/>\n  </View>\n',
        ]
    return "".join(lines) + "</View>\n"


def tasks(items: list[Item], url_prefix: str, task: str) -> list[dict]:
    """Label Studio tasks (``[{"data": {...}}]``) of one task's items."""

    def url(name: str) -> str:
        return url_prefix + quote(name, safe="/")

    out = []
    for it in items:
        if it.task != task:
            continue
        data = {"vipo_item": it.id, "prompt": it.prompt}
        if task == "pairwise":
            data.update(video_a=url(it.videos[0]), video_b=url(it.videos[1]), file_a=it.videos[0], file_b=it.videos[1])
        else:
            data.update(video=url(it.videos[0]), file=it.videos[0])
        out.append({"data": data})
    return out


def write_files(
    folder: Path, items: list[Item], root: Path, url_prefix: str = "", tags: tuple[str, ...] = DEFAULT_TAGS
) -> None:
    prefix = url_prefix or f"/data/local-files/?d={quote(Path(root).resolve().name)}/"
    folder.mkdir(parents=True, exist_ok=True)
    for task in CHOICES:
        if any(it.task == task for it in items):
            (folder / f"{task}_config.xml").write_text(config_xml(task, tags), encoding="utf-8")
            (folder / f"{task}_tasks.json").write_text(
                json.dumps(tasks(items, prefix, task), indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
            )


def _annotator(completed_by) -> str:
    if isinstance(completed_by, dict):
        who = completed_by.get("email") or completed_by.get("id")
    else:
        who = completed_by
    if who is None or who == "":
        raise ValueError("no completed_by")
    return f"label-studio:{who}"


def read_export(path: str | Path, items: dict[str, Item]) -> list[Answer]:
    """The answers in Label Studio's JSON export ``path``; ``items`` (by id) are the folder's items. A task whose
    ``vipo_item`` is unknown, or an annotation without a choice for some dimension, stops with one line naming it."""
    path = Path(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a Label Studio JSON export ({e})") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of tasks (Label Studio's JSON export)")
    answers: dict[tuple[str, str], Answer] = {}
    for n, task in enumerate(data):
        where = f"{path}: task {task.get('id', n) if isinstance(task, dict) else n}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise UserError(f"{where}: no data object")
        item = items.get(task["data"].get("vipo_item"))
        if item is None:
            raise UserError(
                f"{where}: data.vipo_item {task['data'].get('vipo_item')!r} is not an item of this "
                "folder (import the tasks vipo wrote, for the same folder)"
            )
        for ann in task.get("annotations") or []:
            if not isinstance(ann, dict) or ann.get("was_cancelled"):
                continue
            at = f"{where}, annotation {ann.get('id')}"
            try:
                who = _annotator(ann.get("completed_by"))
                verdicts, reasons, tags = {}, {}, {}
                for r in ann.get("result") or []:
                    name, value = r.get("from_name"), r.get("value") or {}
                    if name in DIMENSIONS:
                        (verdicts[name],) = value["choices"]
                    elif name in {f"{d}_reason" for d in DIMENSIONS}:
                        reasons[name[: -len("_reason")]] = "\n".join(value["text"])
                    elif name in ("tags", "tags_a"):
                        tags["A"] = list(value["choices"])
                    elif name == "tags_b":
                        tags["B"] = list(value["choices"])
                missing = [d for d in DIMENSIONS if d not in verdicts]
                if missing:
                    raise ValueError(f"no choice for {', '.join(missing)}")
                answers[(item.id, who)] = Answer(item.id, who, item.task, verdicts, reasons, False, tags)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise UserError(f"{at}: {e}") from None
    return list(answers.values())
