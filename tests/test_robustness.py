"""Before against after hardening: the rule's threshold, Dice at p, compare, the page, the curve."""

import json

import pytest

from napari_advseg.cli import main
from napari_advseg.evaluation.robustness import (
    SPLIT_TEST,
    SPLIT_TEST_HEADLINE,
    SPLIT_VALIDATION,
    compare,
    curve_rows,
    dice_at_p,
    rule_threshold,
)

from .conftest import save_pair
from .test_cli_attack import FAST
from .test_report import Page

ORGANS = ["liver", "spleen"]


def attack(p, decrease, dice=(0.5, 0.5), xi=2.0, split=None, mode="dv", label=None):
    """A hand-made attack row at in-body p ``p`` with each organ's decrease (%) and Dice."""
    decrease = dict(zip(ORGANS, decrease, strict=True))
    dice = dict(zip(ORGANS, dice, strict=True))
    row = {
        "label": label or f"I_DV (xi = {xi:g})",
        "xi": xi,
        "mode": mode,
        "dice": dice,
        "dice_warped": dice,
        "p": p / 1000,
        "p_hu_fov": p / 2,
        "p_hu_body": p,
        "decrease_warped": decrease,
        "success_warped": {o: None if v is None else v >= 30 for o, v in decrease.items()},
    }
    if split is not None:
        row["split"] = split
    return row


def baseline(dice=(0.9, 0.8)):
    values = dict(zip(ORGANS, dice, strict=True))
    return {
        "label": "U-Net",
        "xi": None,
        "mode": None,
        "dice": values,
        "dice_warped": values,
        "p": None,
        "p_hu_fov": None,
        "p_hu_body": None,
    }


CURVE = [  # liver crosses 30 % at 60 (and falls back later), spleen at 80 + 40 * 5/15
    attack(120, (20, 40), (0.7, 0.5), xi=2.5),
    attack(40, (10, 20), (0.8, 0.6), xi=1.5),
    attack(80, (50, 25), (0.4, 0.6), xi=2.0),
    attack(160, (45, 50), (0.5, 0.4), xi=3.0),
]


def test_threshold_is_the_last_organs_first_crossing():
    others = [baseline(), attack(10, (90, 90), mode="random"), attack(5, (90, 90), mode="v")]
    result = rule_threshold([*others, *CURVE], ORGANS)
    assert result["per_organ"]["liver"] == pytest.approx(60.0)
    assert result["per_organ"]["spleen"] == pytest.approx(80 + 40 * 5 / 15)
    assert result["p_hu_body"] == pytest.approx(80 + 40 * 5 / 15) and result["reached"]
    assert result["not_reached"] == [] and result["below_first_tested"] == []
    assert (result["smallest_p_tested"], result["largest_p_tested"], result["points"]) == (
        40,
        160,
        4,
    )
    # the measured bound: the first tested row where every organ has lost 30 %
    assert result["smallest_meeting_row"] == {"label": "I_DV (xi = 3)", "xi": 3.0, "p_hu_body": 160}


def test_threshold_never_reached_says_where_and_how_far():
    rows = [attack(40, (10, 5)), attack(90, (35, 29.9))]
    result = rule_threshold(rows, ORGANS)
    assert result["p_hu_body"] is None and not result["reached"]
    assert result["not_reached"] == ["spleen"] and result["per_organ"]["spleen"] is None
    assert result["largest_p_tested"] == 90 and result["smallest_meeting_row"] is None
    empty = rule_threshold([baseline()], ORGANS)
    assert empty["p_hu_body"] is None and empty["largest_p_tested"] is None
    assert empty["no_data"] == ORGANS and empty["points"] == 0


def test_threshold_from_zero_below_the_first_row_exactly_30_counts_absent_organs_do_not():
    rows = [attack(50, (60, 30.0)), attack(100, (70, None))]
    result = rule_threshold(rows, ORGANS)
    # liver: from (0, 0) to (50, 60), 30 % at 25; spleen exactly 30 at 50
    assert result["per_organ"] == {"liver": pytest.approx(25.0), "spleen": pytest.approx(50.0)}
    assert result["below_first_tested"] == ["liver"] and result["p_hu_body"] == pytest.approx(50)
    assert result["smallest_meeting_row"]["p_hu_body"] == 50
    absent = rule_threshold([attack(50, (60, None))], ORGANS)
    assert absent["no_data"] == ["spleen"] and absent["p_hu_body"] == pytest.approx(25.0)


def test_dice_at_p_interpolates_and_never_extrapolates():
    assert dice_at_p(CURVE, ORGANS, 60) == {
        "liver": pytest.approx(0.6),
        "spleen": pytest.approx(0.6),
    }
    assert dice_at_p(CURVE, ORGANS, 120) == {"liver": 0.7, "spleen": 0.5}
    assert dice_at_p(CURVE, ORGANS, 30) == {"liver": None, "spleen": None}
    assert dice_at_p(CURVE, ORGANS, 161) == {"liver": None, "spleen": None}
    one = [attack(50, (1, 1), (0.3, None))]
    assert dice_at_p(one, ORGANS, 50) == {"liver": 0.3, "spleen": None}


def sweep(rows, validation=(), curve=(), command="advseg sweep", seg="unet"):
    payload = {
        "rows": list(rows),
        "validation_rows": list(validation),
        "organs": ORGANS,
        "seg": seg,
        "command": command,
        "test_subjects": ["a", "b"],
        "headline": {"xi": 2.0, "chosen_by": "validation split"},
    }
    if curve:
        payload["curve_rows"] = list(curve)
    return payload


def before_sweep():
    test = attack(80, (50, 25), (0.4, 0.6), split="test")
    curve = [{**row, "split": "test-curve"} for row in CURVE]
    random = attack(80, (5, 5), (0.85, 0.75), mode="random", label="random D+V")
    return sweep([baseline(), test, random], curve=curve, command="advseg sweep --model A")


def after_sweep(clean=(0.895, 0.795), spleen_top=70):
    validation = [  # liver crosses 30 % at 225, spleen at 133.3 (never without spleen_top)
        attack(100, (10, 10), (0.7, 0.7), xi=1.5),
        attack(200, (20, spleen_top or 20), (0.5, 0.5)),
        attack(300, (60, 20), (0.3, 0.6), xi=3.0),
    ]
    test = attack(200, (40, 35), (0.55, 0.5), split="test")
    random = attack(200, (8, 6), (0.8, 0.7), mode="random", label="random D+V")
    rows = [baseline(clean), test, random]
    return sweep(rows, validation, command="advseg sweep --model B", seg="hardened")


def test_curve_rows_prefer_the_test_curve_and_name_the_split():
    rows, split = curve_rows(before_sweep())
    # the four test-curve rows; the test D+V row's xi has a curve row already: one point per xi
    assert split == SPLIT_TEST and len(rows) == 4
    assert len({r["xi"] for r in rows}) == 4 and all(r["split"] == "test-curve" for r in rows)
    other_xi = before_sweep()
    other_xi["rows"][1]["xi"] = 7.0  # a headline xi without a curve row joins the curve
    assert len(curve_rows(other_xi)[0]) == 5
    rows, split = curve_rows(after_sweep())
    assert split == SPLIT_VALIDATION and [r["p_hu_body"] for r in rows] == [100, 200, 300]
    payload = {**after_sweep(), "validation_rows": []}
    rows, split = curve_rows(payload)
    assert split == SPLIT_TEST_HEADLINE and [r["p_hu_body"] for r in rows] == [200]
    # test-curve rows inside "rows" count too
    inline = sweep([baseline(), *(dict(r, split="test-curve") for r in CURVE)])
    assert curve_rows(inline)[1] == SPLIT_TEST


def test_compare_checks_the_goals_and_names_the_splits():
    summary = compare(before_sweep(), after_sweep())
    json.dumps(summary)  # JSON-ready
    assert summary["before"]["curve_split"] == SPLIT_TEST
    assert summary["after"]["curve_split"] == SPLIT_VALIDATION
    assert any("after sweep's curve is from the validation split" in w for w in summary["warnings"])
    before = summary["before"]["threshold"]["p_hu_body"]
    after = summary["after"]["threshold"]["p_hu_body"]
    assert before == pytest.approx(80 + 40 * 5 / 15)
    assert after == pytest.approx(225)  # the liver's crossing; the spleen's is 133.3
    assert summary["threshold_ratio"]["value"] == pytest.approx(after / before)
    ratio_goal, clean_goal = summary["goals"]
    assert ratio_goal["met"] is True and "ratio 2.41" in ratio_goal["figure"]
    assert clean_goal["met"] is True and "-0.0050" in clean_goal["figure"]
    assert summary["clean_dice_change"] == {
        "liver": pytest.approx(-0.005),
        "spleen": pytest.approx(-0.005),
    }
    # Dice at the before sweep's headline test row's in-body p (80): after's curve starts at 100
    assert summary["at_p_hu"] == 80 and "headline" in summary["at_p_hu_source"]
    assert summary["before"]["dice_at_p"] == {"liver": 0.4, "spleen": 0.6}
    assert summary["after"]["dice_at_p"] == {"liver": None, "spleen": None}
    assert summary["before"]["random"]["label"] == "random D+V"
    assert summary["after"]["random"]["p_hu_body"] == 200
    assert "transfer" not in summary


def test_compare_reports_missed_and_unknown_goals_with_their_figures():
    fell = compare(before_sweep(), after_sweep(clean=(0.87, 0.8)), at_p_hu=150)
    clean_goal = fell["goals"][1]
    assert clean_goal["met"] is False and "liver" in clean_goal["figure"]
    assert fell["at_p_hu"] == 150 and fell["at_p_hu_source"] == "given (--at-p-hu)"
    assert fell["after"]["dice_at_p"]["liver"] == pytest.approx(0.6)
    never = compare(before_sweep(), after_sweep(spleen_top=None))  # spleen never gets to 30 %
    ratio_goal = never["goals"][0]
    assert "after: never reaches 30 % on spleen up to p = 300.0 HU" in ratio_goal["figure"]
    bound = 300 / never["before"]["threshold"]["p_hu_body"]
    assert never["threshold_ratio"]["at_least"] == pytest.approx(bound)
    assert bound >= 2 and ratio_goal["met"] is True  # the bound settles the goal
    short = compare(before_sweep(), after_sweep(spleen_top=None), at_p_hu=150)
    short_after = after_sweep(spleen_top=None)
    for row in short_after.get("curve_rows") or short_after["validation_rows"]:
        row["p_hu_body"] = min(row["p_hu_body"], 120)  # tested only up to 120 HU: < 2x
    unsettled = compare(before_sweep(), short_after)["goals"][0]
    assert unsettled["met"] is None and unsettled["figure"].startswith("unknown: ")
    assert short["goals"][0]["met"] is True
    weak = after_sweep()
    weak["validation_rows"] = [attack(100, (40, 40))]  # threshold 75 < 2 x 93.3
    assert compare(before_sweep(), weak)["goals"][0]["met"] is False


def test_compare_with_transfer_rows():
    transfer = after_sweep()
    transfer["command"] = "advseg sweep --model B --attackers A/attackers/dv_xi2_seed0"
    summary = compare(before_sweep(), after_sweep(), transfer)
    assert summary["transfer"]["command"] == transfer["command"]
    assert [r["mode"] for r in summary["transfer"]["rows"]] == ["dv", "random"]
    assert summary["transfer"]["threshold"]["p_hu_body"] == pytest.approx(225)
    assert not any("transfer" in w for w in summary["warnings"])
    other = {**transfer, "rows": [baseline((0.5, 0.5)), *transfer["rows"][1:]]}
    assert any("transfer" in w for w in compare(before_sweep(), after_sweep(), other)["warnings"])


def write_sweep(folder, payload):
    folder.mkdir(parents=True)
    (folder / "rows.json").write_text(json.dumps(payload))
    return folder


def test_report_after_writes_the_comparison_page_and_markdown(tmp_path, capsys):
    before = write_sweep(tmp_path / "before", before_sweep())  # no figure_slices.npz anywhere
    after = write_sweep(tmp_path / "after", after_sweep(clean=(0.87, 0.8)))
    transfer = write_sweep(tmp_path / "transfer", after_sweep(clean=(0.87, 0.8)))
    out = tmp_path / "out" / "compare.html"
    argv = ["report", "--sweep", str(before), "--after", str(after), "--transfer", str(transfer)]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "threshold" in printed and "MISSED" in printed and str(out) in printed
    page = Page()
    page.feed(out.read_text())
    assert page.external == [] and len(page.images) == 1
    assert page.images[0].startswith("data:image/png;base64,")
    goals = page.tables["goals"]
    assert goals[0] == ["Goal", "Result", "Figure"]
    assert [row[1] for row in goals[1:]] == ["met", "MISSED"]  # the missed goal, shown
    assert "liver" in goals[2][2]
    threshold = page.tables["threshold"]
    assert threshold[0] == ["", "Before", "After", "Transfer"]
    assert threshold[1] == ["every organ (HU, body)", "93.3", "225.0", "225.0"]
    assert page.tables["clean"][1] == ["liver", "0.9000", "0.8700", "0.8700", "-0.0300"]
    assert [row[0] for row in page.tables["random"][1:]] == [
        "before: random D+V",
        "after: random D+V",
        "transfer: random D+V",
    ]
    assert {"rows-before", "rows-after", "rows-transfer", "dice-at-p"} <= set(page.tables)
    # the rows each threshold was interpolated between, by in-body p
    assert [row[2] for row in page.tables["curve-after"][1:]] == ["100.0", "200.0", "300.0"]
    assert page.tables["curve-after"][1][3:] == ["10.0", "10.0"]
    text = out.read_text()
    assert "advseg sweep --model A" in text and "advseg sweep --model B" in text
    markdown = out.with_suffix(".md").read_text()
    assert "| clean Dice falls by at most 0.01 per organ | MISSED |" in markdown
    assert "advseg sweep --model A" in markdown and "| every organ (HU, body) | 93.3 |" in markdown
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["after"]["curve_split"] == SPLIT_VALIDATION
    # default place: the AFTER folder; without --after, --transfer is refused in one line
    assert main(["report", "--sweep", str(before), "--after", str(after)]) == 0
    assert (after / "robustness.html").is_file() and (after / "robustness.md").is_file()
    capsys.readouterr()
    assert main(["report", "--sweep", str(before), "--transfer", str(transfer)]) == 2
    assert "--after" in capsys.readouterr().err
    assert main(["report", "--sweep", str(before), "--after", str(tmp_path / "none")]) == 2
    assert "no rows.json" in capsys.readouterr().err


@pytest.fixture(scope="module")
def curve_setup(cohort, trained_seg_dir, tmp_path_factory):
    """One case and D+V attackers at xi 2 and 3 and a D-only one at 2 (two steps each)."""
    root = tmp_path_factory.mktemp("curve")
    case = save_pair(root, cohort.subject(4), "case")
    folders = []
    for xi, mode in ((2.0, "dv"), (3.0, "dv"), (2.0, "d")):
        folder = root / f"{mode}_{xi:g}"
        argv = ["train-attack", "--model", str(trained_seg_dir), "--xi", str(xi)]
        argv += ["--mode", mode, "--out", str(folder), "--image", str(case[0]), *FAST]
        assert main(argv) == 0
        folders.append(folder)
    return case, folders


def test_curve_on_test_adds_a_test_curve_row_per_candidate_xi(
    trained_seg_dir, curve_setup, tmp_path
):
    (image, labels), attackers = curve_setup
    argv = ["sweep", "--model", str(trained_seg_dir), "--attackers", *map(str, attackers)]
    argv += ["--image", str(image), "--labels", str(labels), "--headline-xi", "2"]
    assert main([*argv, "--out", str(tmp_path / "plain")]) == 0
    assert main([*argv, "--out", str(tmp_path / "curve"), "--curve-on-test"]) == 0
    plain = json.loads((tmp_path / "plain" / "rows.json").read_text())
    data = json.loads((tmp_path / "curve" / "rows.json").read_text())
    assert "curve_rows" not in plain
    curve = data["curve_rows"]
    assert [(r["mode"], r["xi"], r["split"]) for r in curve] == [
        ("dv", 2.0, "test-curve"),
        ("dv", 3.0, "test-curve"),
    ]
    test = next(r for r in data["rows"] if r["mode"] == "dv")
    intervals = {k for k in test if k.endswith("_ci")} | {"seed_spread", "seeds"}
    assert set(curve[0]) == set(test) - intervals  # attack_row's fields and the split
    # the headline xi's first seed is the one attacker of its test row (one seed): same figures
    assert curve[0]["dice_warped"] == pytest.approx(test["dice_warped"])
    assert curve[0]["p_hu_body"] == pytest.approx(test["p_hu_body"])
    assert all(r.get("split") != "test-curve" for r in data["rows"])
    # the other outputs: the test rows unchanged, the curve as a table section and CSV rows
    assert [r["label"] for r in data["rows"]] == [r["label"] for r in plain["rows"]]
    table = (tmp_path / "curve" / "table.md").read_text()
    assert table.startswith((tmp_path / "plain" / "table.md").read_text())
    assert "I_DV (xi = 3, first seed)" in table
    csv = (tmp_path / "curve" / "table.csv").read_text().splitlines()
    assert sum(line.startswith("test-curve,") for line in csv) == 2
    page = Page()
    page.feed((tmp_path / "curve" / "report.html").read_text())
    assert len(page.tables["test-curve"]) == 3
    assert curve_rows(data)[1] == SPLIT_TEST
