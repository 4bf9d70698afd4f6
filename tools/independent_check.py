"""Independent re-check of the world judge (does NOT import vipo.critics or anything it uses).

Reader per clip (all frames decoded with cv2):
  * foreground = pixels whose max channel > FG_T; largest connected component per frame.
  * colour  = nearest palette colour (RGB euclid) to the median RGB of the "core" foreground
              (pixels with max channel >= 0.6 * 95th percentile of foreground max-channel), pooled over frames.
  * shape   = best-IoU blurred ideal template (circle / square / apex-up triangle / apex-down triangle) fitted to the
              bbox, median over frames not clipped by the border (lenient); strict adds margin/consistency/aspect.
  * direction = centroid displacement first->last frame, dominant axis; |d| < MIN_MOVE px -> "none".
Usage: .venv/bin/python tools/independent_check.py [RESULTS_DIR [OUT_DIR]]
  RESULTS_DIR holds round-K/eval/ folders (default docs/results/world-full-dpo); OUT_DIR (default
  RESULTS_DIR/independent) gets clips.jsonl (per clip: what this reader saw and what the judge said) and summary.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import cv2  # noqa: E402
import numpy as np  # noqa: E402

cv2.setNumThreads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from vipo.world.grammar import parse  # noqa: E402  (prompt parsing only)

PALETTE = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (230, 210, 40),
    "white": (235, 235, 235),
    "magenta": (200, 60, 200),
}
FG_T = 100  # max-channel threshold for foreground (background is ~0, shape ~200+)
# Shape = best-IoU ideal template, fitted to the foreground's bounding box, rendered with a Gaussian blur of SIGMAS
# px and thresholded at half height (the generator's output is soft, so corners come out rounded). The triangle is
# isosceles with its apex at top centre; for blurred triangles the apex is cut off by the threshold, so the template's
# apex may sit APEX_PAD px above the box. Lenient shape = argmax.
SIGMAS = (0.0, 1.5, 3.0)
APEX_PAD = (0, 2, 4)
# Strict variant: shape needs IoU margin over the runner-up, the same per-frame winner in most frames, and (circle,
# square) a near-1 aspect ratio; colour needs to be within STRICT_COLOR_DIST of its palette entry (palette entries
# are >= 160 apart, so 50 is well inside the Voronoi cell).
STRICT_MARGIN = 0.03
STRICT_AGREE = 0.75
STRICT_ASPECT = 1.2
STRICT_COLOR_DIST = 50.0
SS = 4  # supersampling for the ideal shapes


def template(shape: str, h: int, w: int, sigma: float, pad: int) -> np.ndarray:
    if shape != "triangle" and shape != "triangle-apex-down" and pad:
        return None
    H, W = (h + pad) * SS, w * SS
    img = np.zeros((H, W), np.uint8)
    if shape == "circle":
        cv2.ellipse(img, (W // 2, H // 2), (W // 2, H // 2), 0, 0, 360, 255, -1)
    elif shape == "square":
        img[:] = 255
    elif shape == "triangle":
        cv2.fillPoly(img, [np.array([[W // 2, 0], [0, H - 1], [W - 1, H - 1]], np.int32)], 255)
    else:
        cv2.fillPoly(img, [np.array([[0, 0], [W - 1, 0], [W // 2, H - 1]], np.int32)], 255)
    img = cv2.resize(img, (w, h + pad), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    if shape == "triangle-apex-down" and pad:
        img = img[::-1]
    if sigma > 0:
        big = np.zeros((h + pad + 20, w + 20), np.float32)
        big[10:-10, 10:-10] = img
        img = cv2.GaussianBlur(big, (0, 0), sigma)[10:-10, 10:-10]
    img = img[pad:] if shape == "triangle" else img[:h]
    return img >= 0.5


def iou(a: np.ndarray, b: np.ndarray | None) -> float:
    if b is None:
        return 0.0
    return float((a & b).sum() / max((a | b).sum(), 1))


MIN_MOVE = 4.0  # px, minimum centroid travel to call a direction
ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/results/world-full-dpo")
OUT = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "independent"


def read_frames(path: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f[:, :, ::-1])  # BGR -> RGB
    cap.release()
    return np.stack(frames).astype(np.float32)


def largest_component(mask: np.ndarray) -> tuple[np.ndarray, float]:
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask & False, 0.0
    areas = stats[1:, cv2.CC_STAT_AREA]
    k = 1 + int(np.argmax(areas))
    stray = float(areas.sum() - areas.max()) / float(areas.sum())
    return lab == k, stray


def read_clip(path: Path) -> dict:
    v = read_frames(path)
    mx = v.max(-1)
    fills, aspects, ious, cents, strays, cols = [], [], [], [], [], []
    H, W = mx.shape[1:]
    for f, m in zip(v, mx):
        fg, stray = largest_component(m > FG_T)
        strays.append(stray)
        if fg.sum() < 20:
            cents.append(None)
            continue
        ys, xs = np.nonzero(fg)
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
        h, w = y1 - y0 + 1, x1 - x0 + 1
        cents.append((xs.mean(), ys.mean()))
        core = m[fg] >= 0.6 * np.percentile(m[fg], 95)
        cols.append(f[fg][core])
        if x0 == 0 or y0 == 0 or x1 == W - 1 or y1 == H - 1:
            continue  # clipped by the frame border: shape measures unreliable
        b = fg[y0 : y1 + 1, x0 : x1 + 1]
        fills.append(b.mean())
        aspects.append(w / h)
        ious.append(
            {
                sh: max(iou(b, template(sh, h, w, sg, top)) for sg in SIGMAS for top in APEX_PAD)
                for sh in ("circle", "square", "triangle", "triangle-apex-down")
            }
        )
    if not cols:
        return {"color": None, "shape": None, "direction": None, "fill": None}
    rgb = np.median(np.concatenate(cols), 0)
    dist = {c: float(np.linalg.norm(rgb - np.array(p))) for c, p in PALETTE.items()}
    color = min(dist, key=dist.get)
    if ious:
        sc = {sh: float(np.median([d[sh] for d in ious])) for sh in ious[0]}
        best = max(sc, key=sc.get)
        shape = best  # lenient: plain argmax
        second = sorted(sc.values())[-2]
        per_frame = [max(d, key=d.get) for d in ious]
        agree = per_frame.count(best) / len(per_frame)
        aspect = float(np.median(aspects))
        strict_ok = (
            sc[best] - second >= STRICT_MARGIN
            and agree >= STRICT_AGREE
            and (best.startswith("triangle") or 1 / STRICT_ASPECT <= aspect <= STRICT_ASPECT)
        )
        shape_strict = best if strict_ok else "unclear"
        fill = round(float(np.median(fills)), 3)
        scores = {k2: round(v2, 3) for k2, v2 in sc.items()}
    else:
        shape, shape_strict, fill, scores, agree, aspect = None, None, None, None, None, None
    valid = [c for c in cents if c is not None]
    dx, dy = valid[-1][0] - valid[0][0], valid[-1][1] - valid[0][1]
    if max(abs(dx), abs(dy)) < MIN_MOVE:
        direction = "none"
    elif abs(dx) >= abs(dy):
        direction = "right" if dx > 0 else "left"
    else:
        direction = "down" if dy > 0 else "up"
    return {
        "color": color,
        "rgb": [round(float(x)) for x in rgb],
        "color_dist": round(dist[color], 1),
        "shape": shape,
        "shape_strict": shape_strict,
        "fill": fill,
        "iou": scores,
        "frame_agree": agree,
        "aspect": aspect,
        "color_strict": color if dist[color] <= STRICT_COLOR_DIST else "off-palette",
        "direction": direction,
        "dx": round(float(dx), 1),
        "dy": round(float(dy), 1),
        "stray": round(float(np.max(strays)), 3),
        "n_frames": len(v),
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    summary = {}
    with open(OUT / "clips.jsonl", "w") as fo:
        for d in sorted(ROOT.glob("round-*/eval"), key=lambda p: int(p.parent.name.split("-")[1])):
            k = int(d.parent.name.split("-")[1])
            meta = [json.loads(l) for l in open(d / "metadata.jsonl")]
            ours = {}
            if (d / "results.jsonl").exists():
                ours = {r["file_name"]: r for r in map(json.loads, open(d / "results.jsonl"))}
            ev = json.load(open(d / "eval.json"))
            acc: dict[str, dict[str, list]] = {}
            for m in meta:
                want = parse(m["prompt"])
                r = read_clip(d / m["file_name"])
                cs_ok = r.get("color_strict") == want.color
                ss_ok = r.get("shape_strict") == want.shape
                c_ok = r["color"] == want.color
                s_ok = r["shape"] == want.shape
                d_ok = r["direction"] == want.direction
                rec = {
                    "round": k,
                    **m,
                    "want": [want.color, want.shape, want.direction],
                    "mine": r,
                    "my": {
                        "color": c_ok,
                        "shape": s_ok,
                        "direction": d_ok,
                        "passed": c_ok and s_ok and d_ok,
                        "color_strict": cs_ok,
                        "shape_strict": ss_ok,
                        "passed_strict": cs_ok and ss_ok and d_ok,
                    },
                }
                o = ours.get(m["file_name"])
                if o:
                    rec["judge"] = {
                        "color": o["color_ok"],
                        "shape": o["shape_ok"],
                        "direction": o["direction_ok"],
                        "passed": o["passed"],
                        "raw": o["raw"].split("\n")[0],
                    }
                fo.write(json.dumps(rec) + "\n")
                a = acc.setdefault(
                    m["split"],
                    {
                        x: []
                        for x in (
                            "passed",
                            "color",
                            "shape",
                            "direction",
                            "j_passed",
                            "j_color",
                            "j_shape",
                            "j_direction",
                        )
                    },
                )
                for x in ("passed_strict", "color_strict", "shape_strict"):
                    a.setdefault(x, []).append(rec["my"][x])
                for x in ("passed", "color", "shape", "direction"):
                    a[x].append(rec["my"][x])
                    if o:
                        a["j_" + x].append(rec["judge"][x])
            for split, a in acc.items():
                e = ev[split]
                row = {"n": len(a["passed"])}
                for x, ek in (
                    ("passed", "semantic_pass"),
                    ("color", "color"),
                    ("shape", "shape"),
                    ("direction", "direction"),
                ):
                    row[x] = (
                        round(float(np.mean(a[x])), 3),
                        round(e[ek], 3),
                        round(float(np.mean(a["j_" + x])), 3) if a["j_" + x] else None,
                    )
                for x in ("passed_strict", "color_strict", "shape_strict"):
                    row[x] = round(float(np.mean(a[x])), 3)
                summary[f"round-{k}/{split}"] = row
    json.dump(summary, open(OUT / "summary.json", "w"), indent=1)
    print("cell: (mine, eval.json, recomputed from results.jsonl)")
    for key, row in summary.items():
        print(key, row)


if __name__ == "__main__":
    main()
