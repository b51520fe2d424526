import json

import nibabel as nib
import numpy as np
import pytest

from napari_advseg.cli import main

from .conftest import save_pair

FAST = [
    "--steps",
    "2",
    "--batch-size",
    "2",
    "--crop-size",
    "64",
    "--critic-steps",
    "1",
    "--latent-d",
    "2",
    "--latent-v",
    "2",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def case(cohort, tmp_path_factory):
    folder = tmp_path_factory.mktemp("case")
    return save_pair(folder, cohort.subject(4), "case")


@pytest.fixture(scope="module")
def attackers(trained_seg_dir, case, tmp_path_factory):
    out = tmp_path_factory.mktemp("attackers")
    folders = []
    for xi, mode in ((2.0, "dv"), (2.0, "d")):
        folder = out / f"{mode}_{xi:g}"
        code = main(
            [
                "train-attack",
                "--model",
                str(trained_seg_dir),
                "--xi",
                str(xi),
                "--mode",
                mode,
                "--out",
                str(folder),
                "--image",
                str(case[0]),
                *FAST,
            ]
        )
        assert code == 0
        folders.append(folder)
    return folders


def test_train_attack_writes_a_checkpoint(attackers):
    config = json.loads((attackers[0] / "config.json").read_text())
    assert config["kind"] == "attacker" and config["attack"]["xi"] == 2.0
    assert config["attacker"]["mode"] == "dv" and config["attacker"]["latent_dim_d"] == 2
    assert config["training"]["command"].startswith("advseg train-attack")


def test_generate_writes_aligned_nifti(trained_seg_dir, attackers, case, tmp_path):
    code = main(
        [
            "generate",
            "--model",
            str(trained_seg_dir),
            "--attacker",
            str(attackers[0]),
            "--image",
            str(case[0]),
            "--out",
            str(tmp_path),
            "--samples",
            "2",
        ]
    )
    assert code == 0
    source = nib.load(case[0])
    for name in (
        "IDV_sample0",
        "IDV_sample1",
        "V_sample0",
        "Dx_mm_sample0",
        "Dy_mm_sample1",
        "S0",
        "SDV_sample1",
    ):
        image = nib.load(tmp_path / f"case_ct_{name}.nii.gz")
        assert image.shape == source.shape, name
        np.testing.assert_allclose(image.affine, source.affine)
    labels = np.asarray(nib.load(tmp_path / "case_ct_S0.nii.gz").dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4}


def test_sweep_with_existing_attackers(trained_seg_dir, attackers, case, tmp_path):
    out = tmp_path / "sweep"
    rows_json = tmp_path / "rows.json"
    code = main(
        [
            "sweep",
            "--model",
            str(trained_seg_dir),
            "--attackers",
            *map(str, attackers),
            "--image",
            str(case[0]),
            "--labels",
            str(case[1]),
            "--out",
            str(out),
            "--json",
            str(rows_json),
            "--headline-xi",
            "2",
        ]
    )
    assert code == 0
    rows = json.loads(rows_json.read_text())
    labels = [row["label"] for row in rows]
    assert labels[:2] == ["U-Net", "U-Net 30% decrease"]
    assert "I_DV (xi = 2)" in labels and "I_D (xi = 2)" in labels
    assert rows[-1]["mode"] == "random"
    for row in rows:
        assert set(row) >= {"label", "xi", "mode", "dice", "p"}
        assert set(row["dice"]) == {"pancreas", "kidneys", "liver", "spleen"}
    learned = next(r for r in rows if r["label"] == "I_DV (xi = 2)")
    # the random baseline at the learned attack's in-body perceptibility
    assert rows[-1]["p_hu_body"] == pytest.approx(learned["p_hu_body"], rel=1e-4)
    for name in ("table.md", "table.csv", "rows.json", "dice_vs_xi.png"):
        assert (out / name).is_file(), name
    extra = json.loads((out / "rows.json").read_text())
    assert extra["headline"] == {
        "xi": 2.0,
        "chosen_by": "given (--headline-xi)",
        "meets_30_percent_at_p_0.1": None,
    }
    assert extra["validation_rows"] == [] and extra["seconds"] > 0
    assert learned["seeds"] == 1 and learned["split"] == "test"
    assert set(learned["dice_warped_ci"]) == set(learned["dice"])
    assert learned["seed_spread"]["dice_warped"]["liver"] is None  # one seed: no spread
    assert "| seeds |" in (out / "table.md").read_text()
    from napari_advseg.evaluation.report import table_cells

    from .test_report import Page

    page = Page()
    page.feed((out / "report.html").read_text())
    assert page.external == [] and len(page.images) == 4  # plots and three Fig. 2 slices
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    organs = list(learned["dice"])
    assert page.tables["test-warped"][1:] == [table_cells(r, organs, "dice_warped") for r in rows]
    assert extra["latent_diversity"]["samples"] == 8
    assert extra["headline"]["xi"] == rows[-1]["matched_xi"]
    assert [draw["seed"] for draw in extra["posterior_draws"]] == [1, 2]
    assert set(extra["posterior_draws"][0]["decrease_warped"]) == set(learned["dice"])


def test_sweep_without_a_validation_split_needs_the_headline_xi(
    trained_seg_dir, attackers, case, tmp_path, capsys
):
    argv = ["sweep", "--model", str(trained_seg_dir), "--attackers", *map(str, attackers)]
    code = main([*argv, "--image", str(case[0]), "--out", str(tmp_path / "s")])
    assert code == 2
    message = capsys.readouterr().err
    assert "chooses the headline xi on validation subjects" in message
    assert "--headline-xi" in message and "\n" not in message.strip()
    assert not (tmp_path / "s" / "rows.json").exists()


def _row(xi, p, success, mode="dv"):
    organs = ("pancreas", "kidneys", "liver", "spleen")
    success_warped = dict(zip(organs, success, strict=True))
    return {"xi": xi, "mode": mode, "p": p, "success_warped": success_warped}


def test_headline_row_is_the_smallest_xi_that_meets_the_bar():
    from napari_advseg.evaluation.sweep import headline_row

    rows = [
        _row(None, None, (None,) * 4, mode=None),
        _row(1.0, 0.05, (True, True, False, True)),
        _row(3.0, 0.09, (True, True, True, True)),
        _row(2.5, 0.08, (True, True, True, None)),  # an organ absent does not count against it
        _row(2.0, 0.12, (True, True, True, True)),  # p too high
        _row(2.0, 0.02, (True,) * 4, mode="v"),  # not D+V
    ]
    row, meets = headline_row(rows)
    assert meets and row["xi"] == 2.5
    row, meets = headline_row(rows[:2] + rows[4:])
    assert not meets and row["xi"] == 2.0


@pytest.mark.parametrize("command", ["eval-seg", "train-attack", "sweep", "generate"])
def test_model_names_the_segmentation_model_in_every_command(command, capsys, tmp_path):
    from napari_advseg.cli import build_parser

    required = {
        "train-attack": ["--out", str(tmp_path / "o")],
        "generate": ["--out", str(tmp_path / "o"), "--image", "ct.nii.gz"],
    }.get(command, [])
    args = build_parser().parse_args([command, *required, "--model", str(tmp_path / "m")])
    assert args.model == tmp_path / "m"
    assert capsys.readouterr().err == ""
    if command != "eval-seg":  # its old name still works there, and says it is deprecated
        args = build_parser().parse_args([command, *required, "--seg", str(tmp_path / "old")])
        assert args.model == tmp_path / "old"
        assert "--seg is deprecated; use --model" in capsys.readouterr().err
