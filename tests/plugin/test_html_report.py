"""`--train-sanity-html`: one self-contained page per run, read back with html.parser."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Optional

import pytest

pytest_plugins = ["pytester"]
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg", force=True)
# In-process pytester runs drop the modules they imported: import pyplot first, once.
import matplotlib.pyplot  # noqa: E402,F401
import matplotlib.ticker  # noqa: E402,F401

from pytest_traincheck.harness import html_report  # noqa: E402

SETUPS = '''
import torch
from pytest_traincheck.harness import examples as ex

torch.set_num_threads(1)

def no_zero_grad_step(model, batch, optimizer, loss_fn):
    x, y = batch
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss

def make():
    return [ex.setup("tiny"), ex.setup("forgets <zero_grad>", step=no_zero_grad_step)]
'''
CODES = ["TRN101", "TRN601", "TRN602"]
PNG = b"\\x89PNG\\r\\n\\x1a\\n".decode("unicode_escape").encode("latin-1")


class Page(HTMLParser):
    """Collect the sections, verdict rows, images, problems and any external reference."""

    def __init__(self) -> None:
        super().__init__()
        self.setups: list[str] = []
        self.rows: dict[str, dict[str, str]] = {}
        self.images: dict[str, list[tuple[str, str]]] = {}
        self.problems: dict[str, list[str]] = {}
        self.external: list[str] = []
        self.text: list[str] = []
        self._setup: Optional[str] = None
        self._row: Optional[str] = None
        self._verdict = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "section" and "data-setup" in a:
            self._setup = a["data-setup"]
            self.setups.append(self._setup)
        elif tag == "tr" and "data-code" in a and self._setup is not None:
            self._row = a["data-code"]
        elif tag == "span" and "verdict" in a.get("class", "") and self._row:
            self._verdict = True
        elif tag == "img":
            self.images.setdefault(self._setup or "", []).append((a.get("src", ""), a.get("alt", "")))
        elif tag == "div" and "problem" in a.get("class", ""):
            self.problems.setdefault(self._setup or "", []).append(a["data-code"])
        if tag in ("script", "link", "iframe") or (tag == "img" and not a.get("src", "").startswith("data:")):
            self.external.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None
        elif tag == "section":
            self._setup = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._verdict and self._setup is not None and self._row:
            self.rows.setdefault(self._setup, {})[self._row] = data.strip()
            self._verdict = False


def _parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def _png(uri: str) -> bytes:
    assert uri.startswith("data:image/png;base64,")
    return base64.b64decode(uri.split(",", 1)[1], validate=True)


def test_the_page_has_every_setup_check_picture_and_problem(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(mysetup=SETUPS)
    pytester.makepyprojecttoml('[tool.traincheck.sanity]\ntrainings = ["mysetup:make"]\n')
    result = pytester.runpytest("--train-sanity", "-p", "no:cacheprovider", "--train-sanity-select", ",".join(CODES),
                                "--train-sanity-html", "reports/sanity.html", "--train-sanity-seed", "2")
    result.assert_outcomes(passed=5, failed=1)
    page = _parse(pytester.path / "reports" / "sanity.html")
    assert page.setups == ["tiny", "forgets <zero_grad>"]  # escaped in the file, read back intact
    assert page.rows == {"tiny": {"TRN101": "PASS", "TRN601": "PASS", "TRN602": "PASS"},
                         "forgets <zero_grad>": {"TRN101": "FAIL", "TRN601": "PASS", "TRN602": "PASS"}}
    assert page.external == []  # nothing to fetch at view time
    for setup in page.setups:
        alts = [alt for _, alt in page.images[setup]]
        assert alts == [f"{setup} overfit loss curve", f"{setup} gradient flow", f"{setup} update ratios"]
        for src, _ in page.images[setup]:
            assert _png(src).startswith(PNG)
    assert page.problems == {"forgets <zero_grad>": ["TRN101"]}
    text = " ".join(page.text)
    assert "Fix:" in text and "zero_grad" in text and "seed" in text


def test_gradient_flow_reads_the_recorded_per_layer_statistics() -> None:
    """The chart's bars are the mean over steps of mean |grad| and the max over steps of max |grad|."""
    from pytest_traincheck.harness import examples as ex
    from pytest_traincheck.harness.runner import Runner

    runner = Runner(seed=0, keep_series=True)
    result = runner.run("TRN601", ex.setup("tiny"))
    series = runner.series[("tiny", "TRN601")]
    names = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    for name in names:
        means, maxes = series[f"grad_abs_mean/{name}"], series[f"grad_abs_max/{name}"]
        assert len(means) == len(maxes) == len(series[f"update_ratio/{name}"]) == len(result.curve)
        assert all(0 < m <= x for m, x in zip(means, maxes))
    assert html_report.gradient_flow_png(series) is not None
    assert Runner(seed=0).series == {}  # nothing kept unless asked


def test_render_without_series_or_overfit_says_so() -> None:
    results = [{"code": "TRN101", "slug": "missing-zero-grad", "verdict": "error", "message": "boom\nline 2",
                "evidence": {"ratio": 0.123456}, "fix": "call zero_grad", "curve": None, "setup": "s",
                "traceback": "Traceback <here>", "duration": 0.5}]
    page = html_report.render({"seed": 1}, results)
    assert "nothing was recorded" in page and "did not run on this setup" in page
    assert "Traceback &lt;here&gt;" in page and "0.1235" in page and "boom<br>line 2" in page
    assert "data:image" not in page
    assert "No check ran." in html_report.render({}, [])


def test_html_without_matplotlib_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(mysetup=SETUPS)
    pytester.makepyprojecttoml('[tool.traincheck.sanity]\ntrainings = ["mysetup:make"]\n')
    pytester.makeconftest("import sys\nsys.modules['matplotlib'] = None\n")
    result = pytester.runpytest("--train-sanity", "--train-sanity-html", "r.html", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--train-sanity-html needs matplotlib*"])
    assert not (pytester.path / "r.html").exists()


def test_option_is_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--train-sanity-html=HTML*", "*train_sanity_html (string)*"])
