"""The HTML report of a sanity run: one self-contained page, pictures drawn with matplotlib.

Per setup: the verdict table, the overfit loss curve (TRN601), the per-layer
gradient-flow chart (mean and max |grad| per parameter over the recorded
steps), the update-to-weight ratios, and each problem's evidence and fix. The
pictures are PNGs embedded as data URIs, so the page needs no network and no
other file. matplotlib is the ``html`` extra; nothing here imports it until a
page is written.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

__all__ = ["HtmlMissing", "INSTALL_HINT", "require_matplotlib", "render", "write"]

INSTALL_HINT = ("--train-sanity-html needs matplotlib: pip install 'pytest-traincheck[html]' "
                "(or pip install matplotlib)")
RATIO_GUIDE = 1e-3  # the usual healthy update-to-weight ratio, drawn as a guide line
MAX_LAYER_LINES = 12  # update-ratio lines drawn per chart before the rest are summarised
VERDICT_COLOURS = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e", "error": "#8250df", "skip": "#6e7781"}

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:72rem;color:#1f2328;
padding:0 1rem}
h1{font-size:1.6rem}h2{border-bottom:1px solid #d0d7de;padding-bottom:.3rem;margin-top:2.5rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}th,td{border:1px solid #d0d7de;padding:.3rem .6rem;
text-align:left;vertical-align:top}th{background:#f6f8fa}.verdicts td:first-child{white-space:nowrap}
.verdict{font-weight:600;color:#fff;border-radius:.3rem;padding:.05rem .4rem;font-size:.85rem}
.meta td,.meta th{border:none;padding:.1rem .8rem .1rem 0}
figure{margin:1rem 0}figcaption{color:#59636e;font-size:.9rem}img{max-width:100%}
.problem{border-left:4px solid #cf222e;padding:.2rem 1rem;margin:1rem 0;background:#fff8f8}
.problem.warn{border-color:#9a6700;background:#fffbeb}.problem.error{border-color:#8250df;background:#fbf7ff}
pre{background:#f6f8fa;padding:.6rem;overflow-x:auto;font-size:.85rem}.empty{color:#59636e}
"""


class HtmlMissing(ImportError):
    """matplotlib, which draws the report's pictures, is not installed."""


def require_matplotlib() -> None:
    """Raise `HtmlMissing` with a one-line install hint unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise HtmlMissing(INSTALL_HINT) from None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display; the page is written from tests and CI
    import matplotlib.pyplot as plt

    return plt


def _integer_ticks() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _png(figure: Any) -> str:
    """Return the figure as a ``data:image/png;base64,...`` URI and close it."""
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=96)
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def loss_curve_png(curve: Sequence[float], title: str) -> str:
    """Draw the overfit loss per step (log scale when every value is positive)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 3.2))
    axes.plot(range(1, len(curve) + 1), curve, color="#0969da", linewidth=1.8)
    if all(v > 0 and math.isfinite(v) for v in curve):
        axes.set_yscale("log")
    axes.xaxis.set_major_locator(_integer_ticks())
    axes.set(xlabel="step on the fixed batch", ylabel="loss", title=title)
    axes.grid(True, alpha=0.3)
    return _png(figure)


def _per_layer(series: Mapping[str, Sequence[float]], prefix: str) -> dict[str, list[float]]:
    return {tag[len(prefix):]: list(values) for tag, values in series.items() if tag.startswith(prefix) and values}


def gradient_flow_png(series: Mapping[str, Sequence[float]]) -> Optional[str]:
    """Draw the classic gradient-flow bars: per parameter, mean and max |grad| over the recorded steps."""
    means = _per_layer(series, "grad_abs_mean/")
    maxes = _per_layer(series, "grad_abs_max/")
    names = [n for n in means if n in maxes]
    if not names:
        return None
    plt = _pyplot()
    mean_values = [sum(means[n]) / len(means[n]) for n in names]
    max_values = [max(maxes[n]) for n in names]
    figure, axes = plt.subplots(figsize=(max(6.0, 0.55 * len(names) + 2), 3.8))
    positions = range(len(names))
    axes.bar(positions, max_values, color="#54aeff", alpha=0.55, label="max |grad| (largest over the steps)")
    axes.bar(positions, mean_values, color="#0550ae", width=0.45, label="mean |grad| (average over the steps)")
    axes.set_xticks(list(positions))
    axes.set_xticklabels(names, rotation=45 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center",
                         fontsize=8)
    if all(v > 0 for v in mean_values + max_values):
        axes.set_yscale("log")
        axes.set_ylim(top=max(max_values) * 8)  # room for the legend above the tallest bar
    axes.set(ylabel="|gradient|", title="gradient flow per parameter")
    axes.legend(fontsize=8)
    axes.grid(True, axis="y", alpha=0.3)
    return _png(figure)


def update_ratio_png(series: Mapping[str, Sequence[float]]) -> Optional[str]:
    """Draw ‖Δw‖/‖w‖ per parameter over the steps, with the usual 1e-3 guide line."""
    ratios = _per_layer(series, "update_ratio/")
    if not ratios:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 3.4))
    shown = list(ratios.items())[:MAX_LAYER_LINES]
    for name, values in shown:
        axes.plot(range(1, len(values) + 1), values, linewidth=1.2, label=name)
    axes.axhline(RATIO_GUIDE, color="#6e7781", linestyle="--", linewidth=1, label="1e-3 (typical)")
    if all(v > 0 for _, values in shown for v in values):
        axes.set_yscale("log")
    axes.xaxis.set_major_locator(_integer_ticks())
    axes.set(xlabel="optimizer step", ylabel="‖Δw‖ / ‖w‖", title="update-to-weight ratio per parameter")
    axes.legend(fontsize=7, ncol=2)
    axes.grid(True, alpha=0.3)
    return _png(figure)


# -- the page ------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _verdict(verdict: str) -> str:
    colour = VERDICT_COLOURS.get(verdict, "#6e7781")
    return f'<span class="verdict verdict-{_e(verdict)}" style="background:{colour}">{_e(verdict.upper())}</span>'


def _table(results: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = ['<table class="verdicts">', "<tr><th>check</th><th>verdict</th><th>time</th><th>message</th></tr>"]
    for r in sorted(results, key=lambda r: r["code"]):
        first = (r.get("message") or "").splitlines()[0] if r.get("message") else ""
        rows.append(f'<tr id="{_e(r["setup"])}-{_e(r["code"])}" data-code="{_e(r["code"])}">'
                    f'<td><code>{_e(r["code"])}</code> {_e(r["slug"])}</td><td>{_verdict(r["verdict"])}</td>'
                    f'<td>{float(r.get("duration") or 0):.2f}s</td><td>{_e(first)}</td></tr>')
    rows.append("</table>")
    return rows


def _figure(uri: Optional[str], alt: str, caption: str) -> list[str]:
    if uri is None:
        return [f'<p class="empty">{_e(caption)}: nothing was recorded.</p>']
    return [f'<figure><img src="{uri}" alt="{_e(alt)}"><figcaption>{_e(caption)}</figcaption></figure>']


def _problem(r: Mapping[str, Any]) -> list[str]:
    out = [f'<div class="problem {_e(r["verdict"])}" data-code="{_e(r["code"])}">',
           f'<h4>{_verdict(r["verdict"])} <code>{_e(r["code"])}</code> {_e(r["slug"])}</h4>',
           f'<p>{_e(r.get("message", "")).replace(chr(10), "<br>")}</p>']
    evidence = r.get("evidence") or {}
    if evidence:
        out.append('<table class="evidence"><tr><th>evidence</th><th>value</th></tr>')
        out += [f"<tr><td>{_e(k)}</td><td>{_e(_number(v))}</td></tr>" for k, v in evidence.items()]
        out.append("</table>")
    if r.get("fix"):
        out.append(f'<p class="fix"><strong>Fix:</strong> {_e(r["fix"])}</p>')
    if r.get("traceback"):
        out.append(f'<pre class="traceback">{_e(r["traceback"])}</pre>')
    out.append("</div>")
    return out


def _setup_section(name: str, results: Sequence[Mapping[str, Any]],
                   series: Optional[Mapping[str, Sequence[float]]]) -> list[str]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    tally = ", ".join(f"{n} {v}" for v, n in counts.items())
    out = [f'<section class="setup" data-setup="{_e(name)}">', f"<h2>setup <code>{_e(name)}</code></h2>",
           f"<p>{_e(tally)}</p>", *_table(results)]
    problems = [r for r in results if r["verdict"] in ("fail", "error", "warn")]
    out.append("<h3>Problems</h3>")
    if problems:
        for r in sorted(problems, key=lambda r: ("fail", "error", "warn").index(r["verdict"])):
            out += _problem(r)
    else:
        out.append('<p class="empty">No check failed or warned.</p>')
    overfit = next((r for r in results if r.get("curve")), None)
    out.append("<h3>Overfit one batch: loss curve</h3>")
    if overfit is not None:
        title = f"{overfit['code']} {overfit['verdict'].upper()}: {len(overfit['curve'])} steps"
        out += _figure(loss_curve_png(overfit["curve"], title), f"{name} overfit loss curve",
                       f"{overfit['code']} {overfit['slug']}: loss per step on one fixed batch")
    else:
        out.append('<p class="empty">The overfit check (TRN601) did not run on this setup.</p>')
    out.append("<h3>Gradient flow</h3>")
    out += _figure(gradient_flow_png(series or {}), f"{name} gradient flow",
                   "mean and max |grad| per parameter over the overfit check's steps; a bar near zero is a "
                   "layer that does not learn")
    out.append("<h3>Update-to-weight ratios</h3>")
    out += _figure(update_ratio_png(series or {}), f"{name} update ratios",
                   "‖Δw‖/‖w‖ per parameter at each optimizer step; around 1e-3 is typical, far below means "
                   "the layer barely moves, far above means it is rewritten every step")
    out.append("</section>")
    return out


def render(meta: Mapping[str, Any], results: Iterable[Mapping[str, Any]],
           series: Optional[Mapping[tuple[str, str], Mapping[str, Sequence[float]]]] = None) -> str:
    """Return the page: ``results`` are `CheckResult.to_dict()` dicts; ``series`` per (setup, code)."""
    by_setup: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        by_setup.setdefault(r["setup"], []).append(r)
    series = series or {}
    total = {v: sum(r["verdict"] == v for rs in by_setup.values() for r in rs) for v in VERDICT_COLOURS}
    head = ", ".join(f"{n} {v}" for v, n in total.items() if n) or "no results"
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           "<title>traincheck training sanity report</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
           "<h1>traincheck training sanity report</h1>", f'<p class="tally">{_e(head)}</p>', '<table class="meta">']
    for key in ("seed", "device", "torch", "strict"):
        if key in meta:
            out.append(f"<tr><th>{_e(key)}</th><td>{_e(meta[key])}</td></tr>")
    out.append("</table>")
    if not by_setup:
        out.append('<p class="empty">No check ran.</p>')
    for name, rs in by_setup.items():
        recorded: dict[str, Sequence[float]] = {}
        for (setup, _code), values in series.items():
            if setup == name:
                recorded.update(values)
        out += _setup_section(name, rs, recorded)
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def write(path: str, meta: Mapping[str, Any], results: Iterable[Mapping[str, Any]],
          series: Optional[Mapping[tuple[str, str], Mapping[str, Sequence[float]]]] = None) -> None:
    """Write the page to ``path`` (folders created)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(meta, results, series), encoding="utf-8")
