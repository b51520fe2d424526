"""The HTML report: self-contained, and its tables are the rows of rows.json."""

import json
from html.parser import HTMLParser

import numpy as np

from napari_advseg.cli import main
from napari_advseg.evaluation.report import FIGURE_FILE, table_cells, write_report

ORGANS = ["liver", "spleen"]


class Page(HTMLParser):
    """The page's images, tables (rows of cell texts) and any external reference."""

    def __init__(self):
        super().__init__()
        self.images, self.tables, self.external = [], {}, []
        self._table = self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag in ("script", "link", "iframe") or (tag == "a" and "href" in attrs):
            self.external.append(tag)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("class"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def row(label, mode, xi, dice, p, ci=None, seeds=None):
    result = {"label": label, "mode": mode, "xi": xi, "dice": dice, "dice_warped": dice, "p": p}
    result["p_hu_fov"] = None if p is None else 100 * p
    if ci is not None:
        result.update(dice_warped_ci=ci, dice_ci=ci, p_ci=[p - 0.01, p + 0.01], seeds=seeds)
    return result


def payload():
    rows = [
        row("U-Net", None, None, {"liver": 0.95, "spleen": 0.9}, None),
        row(
            "I_DV (xi = 2)",
            "dv",
            2.0,
            {"liver": 0.5, "spleen": None},
            0.08,
            {"liver": [0.4, 0.6], "spleen": None},
            3,
        ),
        row("I_D (xi = 2)", "d", 2.0, {"liver": 0.7, "spleen": 0.6}, 0.05),
        row("random D+V", "random", None, {"liver": 0.9, "spleen": 0.85}, 0.08),
    ]
    validation = [
        row("I_DV (xi = 1.5)", "dv", 1.5, {"liver": 0.8, "spleen": 0.7}, 0.05),
        row("I_DV (xi = 2)", "dv", 2.0, {"liver": 0.6, "spleen": 0.5}, 0.07),
    ]
    headline = {"xi": 2.0, "chosen_by": "validation split"}
    return {"rows": rows, "validation_rows": validation, "headline": headline, "seg": "unet"}


def test_the_page_is_self_contained_and_its_tables_are_the_rows(tmp_path):
    (tmp_path / "rows.json").write_text(json.dumps({**payload(), "command": "advseg sweep --x"}))
    rng = np.random.default_rng(0)
    slices = {
        "image": rng.normal(size=(2, 32, 40)).astype(np.float32),
        "attacked": rng.normal(size=(2, 32, 40)).astype(np.float32),
        "s0": rng.integers(0, 3, (2, 32, 40)).astype(np.uint8),
        "s_dv": rng.integers(0, 3, (2, 32, 40)).astype(np.uint8),
        "displacement": rng.normal(size=(2, 2, 32, 40)).astype(np.float32),
        "intensity": rng.normal(size=(2, 32, 40)).astype(np.float32),
    }
    np.savez_compressed(tmp_path / FIGURE_FILE, **slices)
    path = write_report(tmp_path)
    page = Page()
    page.feed(path.read_text())
    assert page.external == []
    assert len(page.images) == 3  # the Dice plots and two slices
    assert all(src.startswith("data:image/png;base64,") and len(src) > 1000 for src in page.images)
    data = payload()
    for name, rows, key in (
        ("test-warped", data["rows"], "dice_warped"),
        ("test-original", data["rows"], "dice"),
        ("validation", data["validation_rows"], "dice_warped"),
    ):
        table = page.tables[name]
        assert table[0] == ["", "Liver", "Spleen", "p", "p (HU, FOV)", "p (HU, body)", "seeds"]
        assert table[1:] == [table_cells(r, ORGANS, key) for r in rows]
    assert page.tables["test-warped"][2] == [
        "I_DV (xi = 2)",
        "50.00 [40.00, 60.00]",
        "-",
        "0.080 [0.070, 0.090]",
        "8.0",
        "-",
        "3",
    ]
    text = path.read_text()
    assert "50.00 [40.00, 60.00]" in text and "advseg sweep --x" in text and "torch" in text


def test_report_command(tmp_path, capsys):
    (tmp_path / "rows.json").write_text(json.dumps(payload()))
    out = tmp_path / "r.html"
    assert main(["report", "--sweep", str(tmp_path), "--out", str(out)]) == 0
    assert out.is_file() and "<h1>" in out.read_text()
    assert main(["report", "--sweep", str(tmp_path / "none")]) == 2
    assert "no rows.json" in capsys.readouterr().err
