"""Helpers shared by unit tests of several modules (prompt suites and run configs)."""

from vipo.config import RunConfig, build, validate_tree


def _cfg(**data):
    cfg = build(RunConfig, data)
    validate_tree(cfg)
    return cfg


def _file(path, lines):
    path.write_text("".join(x + "\n" for x in lines))
    return str(path)


PROMPTS = [
    f"a {c} kite over a {p} at dawn" for c in ("red", "blue", "green", "yellow", "white") for p in ("beach", "lake")
]  # 10 distinct prompts
