"""`traincheck data check`: annotation CSVs and images checked before training."""

from __future__ import annotations

import io as stdio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("pandas")
skio = pytest.importorskip("skimage.io")

from pytest_traincheck.cli import main  # noqa: E402
from pytest_traincheck.data.cli import _Progress  # noqa: E402
from pytest_traincheck.data.check import class_weights  # noqa: E402

ISSUE = {"type": "object", "additionalProperties": False,
         "required": ["kind", "split", "row", "path", "message"],
         "properties": {"kind": {"type": "string"}, "split": {"type": "string"},
                        "row": {"type": ["integer", "null"]}, "path": {"type": "string"},
                        "message": {"type": "string"}}}
FORMAT = {"type": ["object", "null"], "required": ["majority", "count", "values"]}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["schema_version", "root", "splits", "files_checked", "images_read", "errors", "warnings",
                 "image_format", "class_distribution", "imbalance_ratio", "imbalance_threshold",
                 "suggested_weights", "weights_formula", "snippet"],
    "properties": {
        "schema_version": {"const": 1},
        "root": {"type": "string"},
        "splits": {"type": "array", "items": {"type": "object", "required": [
            "name", "csv", "rows", "path_column", "label_column"]}},
        "files_checked": {"type": "integer"},
        "images_read": {"type": "integer"},
        "errors": {"type": "array", "items": ISSUE},
        "warnings": {"type": "array", "items": ISSUE},
        "image_format": {"type": "object", "properties": {"size": FORMAT, "channels": FORMAT, "dtype": FORMAT}},
        "class_distribution": {"type": "object", "additionalProperties": {
            "type": "object", "additionalProperties": {"type": "integer"}}},
        "imbalance_ratio": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
        "imbalance_threshold": {"type": "number"},
        "suggested_weights": {"type": ["array", "null"], "items": {"type": "number"}},
        "weights_formula": {"type": "string"},
        "snippet": {"type": ["string", "null"]},
    },
}


def _gray(seed: int) -> Any:
    return np.random.default_rng(seed).integers(0, 256, size=(8, 8), dtype=np.uint8)


def _write(folder: Path, name: str, pixels: Any) -> None:
    skio.imsave(str(folder / name), pixels, check_contrast=False)


def _csv(path: Path, rows: list[tuple[str, object]], header: str = "file,label") -> Path:
    path.write_text(header + "\n" + "".join(f"{name},{label}\n" for name, label in rows))
    return path


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    """Ten distinct 8x8 grayscale images: g0..g7.png and g8, g9 as JPEG."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(8):
        _write(folder, f"g{i}.png", _gray(i))
    for i in (8, 9):
        _write(folder, f"g{i}.jpg", _gray(i))
    return folder


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    """Run `traincheck data check ... --output-format json`; return the exit code and the report."""
    code = main(["data", "check", *args, "--output-format", "json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def kinds(report: dict[str, Any], key: str = "errors") -> list[tuple[str, int | None]]:
    return [(issue["kind"], issue["row"]) for issue in report[key]]


def test_clean_data_exits_0(images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = _csv(tmp_path / "train.csv", [(f"g{i}.png", i % 2) for i in range(8)])
    code = main(["data", "check", str(csv), "--root", str(images)])
    out = capsys.readouterr().out
    assert code == 0
    assert "Checked 8 files" in out and "All clean" in out
    assert "size 8x8 (8 of 8), channels 1 (8 of 8), dtype uint8 (8 of 8)" in out


def test_broken_files_are_errors(images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (images / "random.png").write_bytes(os.urandom(200))
    jpeg = (images / "g8.jpg").read_bytes()
    (images / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (images / "folder.png").mkdir()
    csv = _csv(tmp_path / "train.csv", [("g0.png", 0), ("nope.png", 1), ("random.png", 0), ("cut.jpg", 1),
                                        ("g8.jpg", 0), ("folder.png", 1), ("", 0)])
    code, report = check(capsys, str(csv), "--root", str(images))
    assert code == 1
    assert kinds(report) == [("missing", 1), ("corrupt", 2), ("corrupt", 3), ("unreadable", 5), ("missing", 6)]
    assert report["errors"][1]["path"] == str(images / "random.png")
    assert "cannot decode" in report["errors"][2]["message"]
    assert report["files_checked"] == 7 and report["images_read"] == 2


def test_labels_must_be_integers(images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = _csv(tmp_path / "train.csv", [("g0.png", 0), ("g1.png", "cat"), ("g2.png", "1.0"), ("g3.png", ""),
                                        ("g4.png", -1), ("g5.png", " 1")])
    code, report = check(capsys, str(csv), "--root", str(images))
    assert code == 1
    assert kinds(report) == [("bad-label", 1), ("bad-label", 2), ("bad-label", 3), ("bad-label", 4)]
    assert "'cat' is not an integer" in report["errors"][0]["message"]
    assert "'1.0' is not an integer" in report["errors"][1]["message"]
    assert "empty" in report["errors"][2]["message"] and "negative" in report["errors"][3]["message"]
    assert report["class_distribution"] == {str(csv): {"0": 1, "1": 1}}


def test_duplicate_within_split_is_a_warning(images: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    _write(images, "copy.png", _gray(3))  # the pixels of g3.png under another name
    csv = _csv(tmp_path / "train.csv", [("g3.png", 0), ("g1.png", 1), ("copy.png", 0), ("g2.png", 1)])
    code, report = check(capsys, str(csv), "--root", str(images))
    assert code == 0
    assert kinds(report, "warnings") == [("duplicate", 2)]
    assert "same pixels as row 0" in report["warnings"][0]["message"]
    assert main(["data", "check", str(csv), "--root", str(images), "--strict"]) == 1


def test_same_image_with_two_labels_is_a_label_conflict(images: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    _write(images, "copy.png", _gray(3))
    csv = _csv(tmp_path / "train.csv", [("g3.png", 0), ("g1.png", 1), ("g3.png", 1), ("copy.png", 2),
                                        ("g2.png", 1), ("g1.png", 1)])
    code, report = check(capsys, str(csv), "--root", str(images))
    assert code == 1  # one picture with two classes is an error, not only a duplicate
    assert kinds(report) == [("label-conflict", 2), ("label-conflict", 3)]
    assert "label 1 here but label 0 at row 0" in report["errors"][0]["message"]
    assert "label 2 here but label 0 at row 0" in report["errors"][1]["message"]
    assert kinds(report, "warnings")[:3] == [("duplicate", 2), ("duplicate", 3), ("duplicate", 5)]
    main(["data", "check", str(csv), "--root", str(images)])
    assert "label-conflict" in capsys.readouterr().out


def test_corrupt_image_message_has_no_doubled_backtick(images: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    (images / "random.png").write_bytes(os.urandom(200))
    csv = _csv(tmp_path / "train.csv", [("g0.png", 0), ("random.png", 1)])
    code, report = check(capsys, str(csv), "--root", str(images))
    assert code == 1 and kinds(report) == [("corrupt", 1)]
    assert "``" not in report["errors"][0]["message"]


def test_duplicate_across_splits_is_a_leak(images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(images, "again.png", _gray(1))
    train = _csv(tmp_path / "train.csv", [("g0.png", 0), ("g1.png", 1), ("g2.png", 0), ("g3.png", 1)])
    test = _csv(tmp_path / "test.csv", [("g4.png", 0), ("again.png", 1), ("g2.png", 0)])
    code, report = check(capsys, str(train), "--split", str(test), "--root", str(images))
    assert code == 1
    assert [(e["kind"], e["split"], e["row"]) for e in report["errors"]] == [
        ("split-leak", str(test), 1), ("split-leak", str(test), 2)]
    assert f"same pixels as {train} row 1" in report["errors"][0]["message"]
    assert f"the same file as {train} row 2" in report["errors"][1]["message"]
    # --split alone, with no positional CSV, works the same way.
    code, again = check(capsys, "--split", str(train), "--split", str(test), "--root", str(images))
    assert code == 1 and again["errors"] == report["errors"]


def test_imbalance_suggests_weights(images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [(f"g{i}.png", 0) for i in range(8)] + [("g8.jpg", 1), ("g9.jpg", 1)]
    csv = _csv(tmp_path / "train.csv", rows)
    code, report = check(capsys, str(csv), "--root", str(images))
    assert code == 0
    assert report["imbalance_ratio"] == {str(csv): 4.0}
    # w_c = (1/n_c) / mean(1/n_j): (1/8) / 0.3125 = 0.4 and (1/2) / 0.3125 = 1.6, mean 1.
    assert report["suggested_weights"] == pytest.approx([0.4, 1.6])
    assert kinds(report, "warnings") == [("imbalance", None)]
    assert "nn.CrossEntropyLoss(weight=torch.tensor([0.4, 1.6]))" in report["snippet"]
    # Under the threshold, no weights are suggested.
    code, report = check(capsys, str(csv), "--root", str(images), "--imbalance-threshold", "4")
    assert code == 0 and report["suggested_weights"] is None and report["warnings"] == []


def test_class_weights_formula() -> None:
    weights = class_weights({0: 10, 1: 5, 2: 0, 3: 20})
    present = [weights[0], weights[1], weights[3]]
    assert sum(present) / 3 == pytest.approx(1.0, abs=1e-5)
    assert weights[2] == 0.0  # a class id with no rows
    assert weights[1] / weights[0] == pytest.approx(2.0, abs=1e-5) and weights[0] / weights[3] == pytest.approx(2.0)


@pytest.mark.slow  # imports torch: seconds on a cold cache
def test_snippet_runs(images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    rows = [(f"g{i}.png", 0) for i in range(8)] + [("g8.jpg", 1), ("g9.jpg", 2)]
    _csv(tmp_path / "train.csv", rows)
    monkeypatch.chdir(tmp_path)  # the snippet reads the CSV by the path it was given
    _, report = check(capsys, "train.csv", "--root", str(images))
    namespace = {"train_dataset": torch.utils.data.TensorDataset(torch.arange(10)), "batch_size": 4}
    exec(report["snippet"], namespace)  # noqa: S102 - the snippet is meant to be pasted and run
    drawn = [int(i) for batch in namespace["train_loader"] for i in batch[0]]
    assert len(drawn) == 10
    assert namespace["criterion"].weight.tolist() == pytest.approx(report["suggested_weights"], abs=1e-3)


def test_inconsistent_channels_name_the_outlier(images: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _write(images, "rgb.png", np.zeros((8, 8, 3), dtype=np.uint8))
    _write(images, "big.png", _gray(11).repeat(2, axis=0))
    csv = _csv(tmp_path / "train.csv", [("g0.png", 0), ("g1.png", 1), ("rgb.png", 0), ("g2.png", 1),
                                        ("big.png", 0)])
    code, report = check(capsys, str(csv), "--root", str(images))
    assert code == 0
    assert kinds(report, "warnings") == [("inconsistent-size", 4), ("inconsistent-channels", 2)]
    assert "channels 3 differs from the majority 1 (4 of 5 images)" in report["warnings"][1]["message"]
    assert report["image_format"]["size"] == {"majority": [8, 8], "count": 4, "values": 2}


def test_json_schema(images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    train = _csv(tmp_path / "train.csv", [("g0.png", 0), ("g1.png", 0), ("g2.png", 0), ("g3.png", 0),
                                          ("g4.png", 1), ("gone.png", 1)])
    test = _csv(tmp_path / "test.csv", [("g5.png", 0), ("g6.png", 2)])
    code, report = check(capsys, str(train), "--split", str(test), "--root", str(images))
    jsonschema.validate(report, SCHEMA)
    assert code == 1
    assert report["class_distribution"] == {str(train): {"0": 4, "1": 2, "2": 0}, str(test): {"0": 1, "1": 0, "2": 1}}
    assert [w["kind"] for w in report["warnings"]] == ["missing-class", "missing-class"]
    assert report["splits"][0] == {"name": str(train), "csv": str(train), "rows": 6, "path_column": "file",
                                   "label_column": "label"}


def test_columns_by_name_and_without_header(images: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    named = tmp_path / "named.csv"
    named.write_text("label,image\n0,g0.png\n1,g1.png\n")
    code, report = check(capsys, str(named), "--root", str(images), "--path-column", "image", "--label-column", "label")
    assert code == 0 and report["images_read"] == 2
    bare = tmp_path / "bare.csv"
    bare.write_text("g0.png,0\ng1.png,1\n")
    code, report = check(capsys, str(bare), "--root", str(images), "--no-header")
    assert code == 0 and report["files_checked"] == 2


@pytest.mark.parametrize(("extra", "content", "expected"), [
    (["--label-column", "klass"], "file,label\ng0.png,0\n",
     "has no column 'klass' (--label-column); its columns are: 'file', 'label'"),
    ([], "file\ng0.png\n", "has 1 column(s) ('file'); need a file name and a label column"),
    ([], "", "cannot read"),
    (["--imbalance-threshold", "0.5"], "file,label\ng0.png,0\n", "--imbalance-threshold must be at least 1"),
])
def test_usage_errors_exit_2(images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             extra: list[str], content: str, expected: str) -> None:
    csv = tmp_path / "train.csv"
    csv.write_text(content)
    assert main(["data", "check", str(csv), "--root", str(images), *extra]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1


def test_missing_csv_root_and_action_exit_2(images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(tmp_path / "nope.csv"), "--root", str(images)]) == 2
    assert "nope.csv: no such file" in capsys.readouterr().err
    csv = _csv(tmp_path / "train.csv", [("g0.png", 0)])
    assert main(["data", "check", str(csv), "--root", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["data", "check", str(csv), "--split", str(csv)]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main(["data"]) == 2 and "missing action" in capsys.readouterr().err
    assert main(["data", "check", "--root", str(images)]) == 2


def test_wrong_root_gets_a_hint(images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = _csv(tmp_path / "train.csv", [("g0.png", 0), ("g1.png", 1)])
    code, report = check(capsys, str(csv), "--root", str(tmp_path))
    assert code == 1 and kinds(report, "warnings") == [("root-hint", None)]


def test_missing_extras_say_what_to_install(images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # makes `import pandas` raise ImportError
    csv = _csv(tmp_path / "train.csv", [("g0.png", 0)])
    assert main(["data", "check", str(csv), "--root", str(images)]) == 2
    err = capsys.readouterr().err
    assert "pandas is missing" in err and "pip install 'pytest-traincheck[data]'" in err


def test_progress_bar_only_on_a_terminal() -> None:
    class Terminal(stdio.StringIO):
        def isatty(self) -> bool:
            return True

    pipe, tty = stdio.StringIO(), Terminal()
    for stream in (pipe, tty):
        bar = _Progress(stream, width=10, every=0.0)
        for done in range(1, 5):
            bar(done, 4)
        bar.close()
    assert pipe.getvalue() == ""
    assert "[##########] 4/4 100%" in tty.getvalue() and tty.getvalue().endswith("\r")


def test_subprocess_has_no_traceback(images: Path, tmp_path: Path) -> None:
    (images / "bad.png").write_bytes(b"not a png")
    _csv(tmp_path / "train.csv", [("g0.png", 0), ("bad.png", "x"), ("gone.png", 1)])
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([sys.executable, "-m", "pytest_traincheck", "data", "check", "train.csv",
                           "--root", "images"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr and done.stderr == ""  # no progress bar on a pipe
    assert "Found 3 errors" in done.stdout
    usage = subprocess.run([sys.executable, "-m", "pytest_traincheck", "data", "check", "missing.csv"],
                           cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1 and "Traceback" not in usage.stderr
