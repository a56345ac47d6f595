"""``leadscore monitor report``: the monitor's latest evaluation as text, JSON or one
self-contained HTML page (inline SVG plots over time, no script, no external file)."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from leadscore.errors import LeadscoreError
from leadscore.monitor.service import REPORT_FILE

PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


class NoReportError(LeadscoreError):
    """The monitor has not written a report yet."""


def load_report(state_dir: str | Path) -> dict[str, Any]:
    path = Path(state_dir) / REPORT_FILE
    if not path.is_file():
        raise NoReportError(
            f"no monitor report in {path}: start `leadscore monitor` (same "
            "LEADSCORE_MONITOR_STATE_DIR) and wait for its first evaluation"
        )
    data: dict[str, Any] = orjson.loads(path.read_bytes())
    return data


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def text(report: dict[str, Any]) -> str:
    lines = [
        f"monitor report at {report.get('at')} (outcomes read up to {report.get('watermark')}; "
        f"window {report.get('window_days')} days of matured moments)"
    ]
    for v, r in report.get("versions", {}).items():
        perf, est = r["performance"], r["estimate"]
        lines.append(f"\nmodel {v} (horizon {r['horizon_days']:g} days)")
        lines.append(
            f"  matured moments {perf['moments']} ({perf['positives']} converted): "
            f"ROC AUC {_f(perf['roc_auc'])} (training {_f(r.get('training_roc_auc'))}), "
            f"PR AUC {_f(perf['pr_auc'])}, Brier {_f(perf['brier'])}, ECE {_f(perf['ece'])}, "
            f"top-decile lift {_f(perf['top_decile_lift'], 2)}"
        )
        tiers = ", ".join(
            f"{t} {_f(x['conversion_rate'])} ({x['moments']})" for t, x in perf["tiers"].items()
        )
        lines.append(f"  conversion by tier: {tiers}")
        lines.append(
            f"  pending moments {est['moments']}: ESTIMATED ROC AUC {_f(est['roc_auc'])}, "
            f"estimated conversion rate {_f(est['conversion_rate'])}"
        )
        drift = r.get("drift") or []
        alarms = [d for d in drift if d["alarm"]]
        if drift:
            lines.append(
                f"  drift over the last {drift[0]['window']} vectors: "
                + (
                    ", ".join(
                        f"{d['feature']} (PSI {d['psi']:.4f} > {d['psi_threshold']:.4f})"
                        for d in alarms
                    )
                    if alarms
                    else "no feature drifted"
                )
            )
        else:
            lines.append("  drift: no live bin counts (LEADSCORE_MONITOR_SCRAPE) or no reference")
        low = [
            f
            for f in r.get("fairness") or []
            if (f.get("hot_share_ratio_high") or 1) < 0.8
            or (f.get("hot_share_ratio_low") or 1) > 1.25
        ]
        lines.append(
            f"  fairness: {len(r.get('fairness') or [])} segments reported"
            + (
                "; outside the 0.8-1.25 band: "
                + ", ".join(
                    f"{f['attribute']}={f['segment']} hot share x{_f(f['hot_share_ratio'], 2)}"
                    for f in low
                )
                if low
                else ""
            )
        )
    for v, cs in (report.get("cohorts") or {}).items():
        both = [(d, c) for d, c in sorted(cs.items()) if c.get("measured_roc_auc") is not None]
        if both:
            lines.append(f"\nestimate vs measured ({v}), per day of scoring:")
            for d, c in both[-10:]:
                lines.append(
                    f"  {d}: estimated AUC {_f(c.get('estimated_roc_auc'))} "
                    f"-> measured {_f(c.get('measured_roc_auc'))}"
                )
    return "\n".join(lines)


# ------------------------------------------------------------------------------- HTML
def _svg_lines(
    title: str,
    series: Mapping[str, Sequence[float | None]],
    *,
    bands: Sequence[float] = (),
    y_label: str = "",
    width: int = 760,
    height: int = 260,
) -> str:
    """A line chart of ``series`` over the evaluations (x: evaluation index)."""
    data = [v for s in series.values() for v in s if v is not None]
    if not data:
        return f"<h3>{html.escape(title)}</h3><p>no data yet</p>"
    values = data + list(bands)
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.08
    lo, hi = lo - pad, hi + pad
    n = max(len(s) for s in series.values())
    left, right, top, bottom = 52, 250, 24, 28
    w, h = width - left - right, height - top - bottom

    def x(i: int) -> float:
        return left + (w * i / max(1, n - 1))

    def y(v: float) -> float:
        return top + h * (1 - (v - lo) / (hi - lo))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>',
    ]
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        parts.append(
            f'<text x="{left - 4}" y="{y(v) + 4:.1f}" font-size="10" '
            f'text-anchor="end">{v:.3g}</text>'
        )
    for b in bands:
        parts.append(
            f'<line x1="{left}" x2="{left + w}" y1="{y(b):.1f}" y2="{y(b):.1f}" '
            'stroke="#999" stroke-dasharray="4 3"/>'
        )
    for k, (name, s) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        pts = [(x(i), y(v)) for i, v in enumerate(s) if v is not None]
        if len(pts) == 1:
            cx, cy = pts[0]
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{color}"/>')
        elif pts:
            d = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
            dash = ' stroke-dasharray="6 3"' if "estimate" in name else ""
            parts.append(
                f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="1.8"{dash}/>'
            )
        parts.append(
            f'<text x="{left + w + 8}" y="{top + 12 + 14 * k}" font-size="11" fill="{color}">'
            f"{html.escape(_short(name))}</text>"
        )
    parts.append(
        f'<text x="{left}" y="{height - 8}" font-size="10">evaluations over time '
        f"({n} points){' - ' + html.escape(y_label) if y_label else ''}</text></svg>"
    )
    return "".join(parts)


def _short(name: str, width: int = 34) -> str:
    """A legend label that fits: the middle of a long one (a version name) gives way, so
    its end ("measured", "estimate") stays readable."""
    if len(name) <= width:
        return name
    half = (width - 1) // 2
    return name[:half] + "\u2026" + name[-(width - 1 - half) :]


def _series(history: list[dict[str, Any]], v: str, key: str) -> list[float | None]:
    return [(h["versions"].get(v) or {}).get(key) for h in history]


def _nested(
    history: list[dict[str, Any]], v: str, key: str, top: int
) -> dict[str, list[float | None]]:
    names: dict[str, float] = {}
    for h in history:
        for name, val in ((h["versions"].get(v) or {}).get(key) or {}).items():
            if val is not None:
                off = abs(val - (1.0 if key == "fairness" else 0.0))
                names[name] = max(names.get(name, 0.0), off)
    chosen = sorted(names, key=lambda k: -names[k])[:top]
    return {
        name: [((h["versions"].get(v) or {}).get(key) or {}).get(name) for h in history]
        for name in chosen
    }


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    th = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _performance_html(report: dict[str, Any], history: list[dict[str, Any]]) -> list[str]:
    versions = list(report.get("versions", {}))
    body = ["<h2>Online performance per model version</h2>"]
    body.append(
        _svg_lines(
            "ROC AUC of matured moments (dashed: estimate for pending ones)",
            {
                **{f"{v} measured": _series(history, v, "roc_auc") for v in versions},
                **{f"{v} estimate": _series(history, v, "estimated_roc_auc") for v in versions},
            },
        )
    )
    body.append(
        _svg_lines(
            "Calibration: expected calibration error",
            {v: _series(history, v, "ece") for v in versions},
            bands=(0.05,),
        )
    )
    rows = []
    for v, r in report.get("versions", {}).items():
        perf, est = r["performance"], r["estimate"]
        rows.append(
            [v, perf["moments"], perf["positives"], _f(perf["roc_auc"]),
             _f(r.get("training_roc_auc")), _f(perf["pr_auc"]), _f(perf["brier"]), _f(perf["ece"]),
             _f(perf["top_decile_lift"], 2), est["moments"], _f(est["roc_auc"])]
        )  # fmt: skip
    body.append(
        _table(
            [
                "model",
                "matured",
                "converted",
                "ROC AUC",
                "training AUC",
                "PR AUC",
                "Brier",
                "ECE",
                "lift top 10%",
                "pending",
                "ESTIMATED AUC",
            ],
            rows,
        )  # fmt: skip
    )
    for v, cs in (report.get("cohorts") or {}).items():
        both = [(d, c) for d, c in sorted(cs.items()) if c.get("measured_roc_auc") is not None]
        if both:
            body.append(
                f"<h3>Estimate made while pending vs measured once matured ({html.escape(v)})</h3>"
            )
            body.append(
                _table(
                    ["day scored", "estimated AUC", "from", "measured AUC", "from"],
                    [
                        [
                            d,
                            _f(c.get("estimated_roc_auc")),
                            c.get("estimated_from"),
                            _f(c.get("measured_roc_auc")),
                            c.get("measured_from"),
                        ]
                        for d, c in both[-30:]
                    ],
                )  # fmt: skip
            )
    return body


def _drift_html(report: dict[str, Any], history: list[dict[str, Any]]) -> list[str]:
    body = ["<h2>Drift (PSI / its no-drift threshold; above 1 is an alarm)</h2>"]
    for v, r in report.get("versions", {}).items():
        drifts = _nested(history, v, "drift", 10)
        body.append(_svg_lines(f"Drift per feature - {v}", drifts, bands=(1.0,)))
        drift = r.get("drift") or []
        if drift:
            body.append(
                _table(
                    ["feature", "PSI", "threshold", "JS distance", "alarm"],
                    [
                        [
                            d["feature"],
                            _f(d["psi"], 4),
                            _f(d["psi_threshold"], 4),
                            _f(d["js_distance"], 4),
                            "DRIFT" if d["alarm"] else "",
                        ]
                        for d in sorted(drift, key=lambda d: -d["psi"])
                    ],
                )  # fmt: skip
            )
    return body


def _fairness_html(report: dict[str, Any], history: list[dict[str, Any]]) -> list[str]:
    body = ["<h2>Fairness (hot-tier share of a segment over the overall share)</h2>"]
    for v, r in report.get("versions", {}).items():
        ratios = _nested(history, v, "fairness", 10)
        body.append(_svg_lines(f"Hot share ratio per segment - {v}", ratios, bands=(0.8, 1.25)))
        fair = r.get("fairness") or []
        if fair:
            body.append(
                _table(
                    [
                        "attribute",
                        "segment",
                        "moments",
                        "hot share x",
                        "95% interval",
                        "TPR x",
                        "FPR x",
                        "calibration gap",
                    ],
                    [
                        [
                            f["attribute"],
                            f["segment"],
                            f["moments"],
                            _f(f["hot_share_ratio"], 2),
                            f"{_f(f['hot_share_ratio_low'], 2)}-{_f(f['hot_share_ratio_high'], 2)}",
                            _f(f["tpr_ratio"], 2),
                            _f(f["fpr_ratio"], 2),
                            _f(f["calibration_gap"]),
                        ]
                        for f in fair
                    ],
                )  # fmt: skip
            )
    return body


def to_html(report: dict[str, Any]) -> str:
    """One self-contained page: plots over the monitor's evaluations and current tables."""
    history = report.get("history") or []
    body = [
        "<h1>leadscore monitor</h1>",
        f"<p>at {html.escape(str(report.get('at')))}; outcomes read up to "
        f"{html.escape(str(report.get('watermark')))}; {len(history)} evaluations</p>",
        *_performance_html(report, history),
        *_drift_html(report, history),
        *_fairness_html(report, history),
    ]
    style = (
        "body{font-family:sans-serif;margin:24px;max-width:1000px}"
        "table{border-collapse:collapse;margin:8px 0 20px}"
        "td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px}svg{display:block;margin:8px 0}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>leadscore monitor</title>"
        f"<style>{style}</style></head><body>" + "\n".join(body) + "</body></html>"
    )


def to_json(report: dict[str, Any]) -> str:
    return orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()
