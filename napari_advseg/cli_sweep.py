"""``advseg sweep``: Table 1, with xi chosen on validation subjects and the test split used once.

1. **Selection.** One D+V attacker per ``--xi`` (one seed) is evaluated on the validation
   subjects; the headline xi is the smallest whose attack meets the 30 % rule on every organ at
   p <= 0.1, else the one nearest 2 (:func:`~napari_advseg.evaluation.sweep.headline_row`).
   ``--headline-xi`` fixes it instead (for data without a validation split, such as one scan).
2. **Test.** The headline D+V attack, D only and V only at that xi, each trained with ``--seeds``
   seeds, are evaluated once on the test subjects, with 95 % bootstrap intervals over subjects and
   the spread over seeds (:mod:`~napari_advseg.evaluation.seeded`), and a random baseline at the
   headline's perceptibility.
3. **Curve** (``--curve-on-test``). The first-seed D+V attacker of every candidate xi is evaluated
   on the test subjects too, as ``rows.json``'s ``curve_rows`` (``"split": "test-curve"``): the
   p-against-damage curve on the test split that a robustness comparison
   (:mod:`~napari_advseg.evaluation.robustness`) reads. It adds evaluation only where the
   candidates were trained for the selection; with ``--headline-xi`` they are trained for it.

Under torchrun every rank runs the same plan: each attacker is trained by all of them (DDP, the
global ``--batch-size`` shared), each evaluation is shared out by subject and gathered
(:func:`~napari_advseg.evaluation.attack_eval.evaluate_attack`), and rank 0 writes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ._cli_common import (
    add_data_arguments,
    add_force_argument,
    add_model_argument,
    check_attacker_target,
    check_data_files,
    check_training_out,
    dataset_split,
    eval_volumes,
    load_model,
)
from .cli_attack import MAX_XI, add_attack_settings, train_one
from .errors import InvalidInputError
from .validation import arg_float, arg_int, available_memory, check_output_dir, check_output_file

SELECTION_XI = (1.5, 2.0, 2.5, 3.0)
"""The xi the headline is chosen among (issue 11: one seed each, on the validation split)."""
MAX_SEEDS = 10
SWEEP_CACHE_BYTES = 512 * 1024**2
"""Test volumes the sweep keeps between its passes (one per attacker); the rest are re-read."""
MODES = ("dv", "d", "v")
SYMBOLS = {"dv": "I_DV", "d": "I_D", "v": "I_V"}


def add_sweep_command(commands: Any) -> None:
    """Register ``sweep`` on the ``advseg`` subparsers."""
    sweep = commands.add_parser(
        "sweep",
        help="Table 1: xi chosen on validation, D+V, D-only, V-only and random on test, with CIs",
        description=(
            "Train (or, with --attackers, load) one D+V attacker per --xi and evaluate them on "
            "the validation subjects to choose the headline xi (the smallest that meets the 30 % "
            "rule on every organ at p <= 0.1); then train the headline D+V, D-only and V-only "
            "attacks at that xi with --seeds seeds, evaluate them once on the test subjects with "
            "95 % bootstrap intervals over subjects, and a random baseline at the headline's p. "
            "Writes Table 1 as Markdown, CSV, JSON and a PNG plot into --out. Attackers train on "
            "the training subjects (a --dataset's train split, or the phantom's)."
        ),
    )
    add_model_argument(sweep)
    add_force_argument(sweep)
    sweep.add_argument(
        "--xi",
        type=arg_float(0, MAX_XI),
        nargs="+",
        default=list(SELECTION_XI),
        help="xi to choose the headline among, on the validation subjects (default 1.5 2 2.5 3)",
    )
    sweep.add_argument(
        "--headline-xi",
        type=arg_float(0, MAX_XI),
        default=None,
        help="use this xi for the test rows instead of choosing one (say where it was chosen)",
    )
    sweep.add_argument(
        "--seeds",
        type=arg_int(1, MAX_SEEDS),
        default=3,
        help="training seeds of each test row (default 3: --seed, --seed + 1, ...)",
    )
    sweep.add_argument(
        "--attackers",
        type=Path,
        nargs="+",
        default=None,
        help="evaluate these attacker checkpoints instead of training (grouped by mode and xi; "
        "several of one mode and xi are its seeds)",
    )
    sweep.add_argument(
        "--with-real-train",
        action="store_true",
        help=(
            "also train the attackers on the real case's training slices (never its held-out "
            "block, which --sample real-test evaluates)"
        ),
    )
    sweep.add_argument(
        "--compare-eq5",
        choices=("hard", "kl", "soft"),
        default=None,
        help="also train and test the headline D+V attack with this eq. 5 form (one seed)",
    )
    sweep.add_argument(
        "--curve-on-test",
        action="store_true",
        help=(
            "also evaluate the first-seed D+V attacker of every candidate xi on the test "
            "subjects (rows.json's curve_rows, split test-curve): the p-against-damage curve "
            "that `advseg report --after` compares; with --headline-xi and no --attackers, the "
            "--xi attackers are trained for it"
        ),
    )
    sweep.add_argument("--out", type=Path, default=Path("sweep"), help="output folder")
    sweep.add_argument("--json", type=Path, default=None, help="also write the rows here")
    sweep.add_argument(
        "--overwrite",
        action="store_true",
        help="replace attacker checkpoints already in OUT/attackers (else they are refused)",
    )
    add_attack_settings(sweep, with_xi=False)
    add_data_arguments(sweep, default_sample=None)
    sweep.set_defaults(handler=sweep_command)


def add_report_command(commands: Any) -> None:
    """Register ``report`` on the ``advseg`` subparsers."""
    report = commands.add_parser(
        "report",
        help="render a sweep's results (or two sweeps, before and after hardening) as HTML",
        description=(
            "Render the --out folder of `advseg sweep` (rows.json, figure_slices.npz) as one "
            "HTML file with everything embedded: Table 1 with intervals, Dice against xi and p, "
            "the D-only, V-only and random rows, slices as the paper's Fig. 2, the command and "
            "the versions. sweep writes it too, as report.html. With --after, compare the "
            "sweep of the original model (--sweep) with the sweep of its hardened version "
            "instead: the smallest in-body p at which a fresh attacker makes every organ lose "
            "30 %, Dice at one in-body p, clean Dice, random and transfer rows and the goals, "
            "as HTML, Markdown (.md) and JSON (.json) side by side."
        ),
    )
    report.add_argument("--sweep", type=Path, required=True, help="a sweep's --out folder")
    report.add_argument(
        "--after",
        type=Path,
        default=None,
        help="the sweep of the hardened model (same settings): compare it with --sweep",
    )
    report.add_argument(
        "--transfer",
        type=Path,
        default=None,
        help="with --after: a sweep of --sweep's attackers against the hardened model",
    )
    report.add_argument(
        "--at-p-hu",
        type=arg_float(0),
        default=None,
        help="with --after: the in-body p (HU) to compare Dice at (default: the headline "
        "D+V test row's of --sweep)",
    )
    report.add_argument(
        "--out",
        type=Path,
        default=None,
        help="HTML file to write (default: SWEEP/report.html; with --after, "
        "AFTER/robustness.html, and .md and .json beside it)",
    )
    report.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> None:
    from .evaluation.report import write_report

    if args.out is not None:
        check_output_file(args.out, "--out", (".html", ".htm"))
    if args.after is not None:
        _compare_report(args)
        return
    if args.transfer is not None or args.at_p_hu is not None:
        raise InvalidInputError(
            "--transfer and --at-p-hu compare two sweeps: give the hardened model's sweep "
            "with --after too."
        )
    print(f"wrote {write_report(args.sweep, args.out)}")


def _compare_report(args: argparse.Namespace) -> None:
    from .evaluation.report_compare import plain_summary, write_comparison

    written, summary = write_comparison(
        args.sweep, args.after, args.transfer, args.at_p_hu, args.out
    )
    print(plain_summary(summary))
    print("wrote " + ", ".join(str(p) for p in written))


def _folder(out: Path, mode: str, xi: float, seed: int, eq5: str | None = None) -> Path:
    suffix = f"_eq5{eq5}" if eq5 else ""
    return out / "attackers" / f"{mode}_xi{xi:g}_seed{seed}{suffix}"


def _validation_volumes(args: argparse.Namespace, seg: Any) -> list[Any] | None:
    """The validation subjects: a --dataset's val split or the phantom's; None for other data."""
    from .data.dataset_folder import dataset_volumes
    from .data.samples import PhantomCohort

    if args.dataset is not None:
        folder, cases = dataset_split(args, "val")
        return list(dataset_volumes(folder, cases, seg.spec.label_map, args.label_map))
    if args.sample == ["phantom"]:
        return PhantomCohort(args.subjects, args.cohort_seed).volumes("val")
    return None


def _train_volumes(args: argparse.Namespace, seg: Any) -> list[Any]:
    from .data.dataset_folder import dataset_volumes
    from .data.label_remap import relabeled_volumes
    from .data.samples import PhantomCohort, real_case_part
    from .labels import DEFAULT_LABEL_MAP

    if args.dataset is not None:
        folder, cases = dataset_split(args, "train")
        volumes = list(dataset_volumes(folder, cases, seg.spec.label_map, args.label_map))
    else:
        volumes = PhantomCohort(args.subjects, args.cohort_seed).volumes("train")
    if args.with_real_train:
        blocks = real_case_part("train")
        volumes += list(relabeled_volumes(blocks, DEFAULT_LABEL_MAP, seg.spec.label_map, None))
    return volumes


def _eq5_of(loaded: Any) -> str:
    """The eq. 5 form an attacker was trained with (``soft`` before the choice existed)."""
    return str(loaded.config["attack"].get("eq5", "soft"))


class _Attackers:
    """The attackers of a sweep: given ones, or trained on demand into OUT/attackers."""

    def __init__(self, args: argparse.Namespace, seg: Any) -> None:
        from .training.attacker_io import load_attacker

        self.args, self.seg = args, seg
        self.given: dict[tuple[str, float], list[Any]] = {}
        for folder in args.attackers or []:
            loaded = load_attacker(folder)
            check_attacker_target(loaded, seg, args)
            self.given.setdefault((loaded.mode, loaded.xi), []).append(loaded)
        self._train: list[Any] | None = None
        self._trained: dict[Path, Any] = {}

    def seeds(self, mode: str, xi: float, count: int, eq5: str | None = None) -> list[Any]:
        """``count`` attackers of ``mode`` and ``xi`` (given: those there are, at most count).

        ``eq5`` trains them with that form of eq. 5 instead of ``--eq5``.
        """
        from .training.attacker_io import load_attacker

        if self.args.attackers:
            found = self.given.get((mode, xi), [])
            compared = self.args.compare_eq5
            if eq5 is not None:
                found = [a for a in found if _eq5_of(a) == eq5]
            elif compared is not None and compared != self.args.eq5:  # the comparison's own
                found = [a for a in found if _eq5_of(a) != compared]
            return found[:count]
        if self._train is None:
            self._train = _train_volumes(self.args, self.seg)
        folders = [
            _folder(self.args.out, mode, xi, seed, eq5)
            for seed in range(self.args.seed, self.args.seed + count)
        ]
        for seed, folder in zip(
            range(self.args.seed, self.args.seed + count), folders, strict=True
        ):
            if folder not in self._trained:  # each is trained once per run (dv seed 0: selection)
                changes = {"seed": seed, **({"eq5": eq5} if eq5 else {})}
                settings = argparse.Namespace(**{**vars(self.args), **changes})
                train_one(settings, self.seg, self._train, folder, xi, mode)
                self._trained[folder] = load_attacker(folder)
        return [self._trained[folder] for folder in folders]


def _candidates(args: argparse.Namespace, attackers: _Attackers) -> list[float]:
    """The xi of the D+V attackers the headline is chosen among (and the test curve drawn of)."""
    if args.attackers:
        return sorted(xi for mode, xi in attackers.given if mode == "dv")
    return sorted(args.xi)


def _check_plan(args: argparse.Namespace, has_validation: bool) -> None:
    if args.headline_xi is None and not has_validation:
        raise InvalidInputError(
            "sweep chooses the headline xi on validation subjects, and this data has none (only "
            "--sample phantom and --dataset do): give --headline-xi X, chosen elsewhere."
        )
    if args.attackers:
        return
    # every folder the run may train into is checked now, not after an hour of training
    candidates = [args.headline_xi] if args.headline_xi is not None else args.xi
    for xi in candidates:
        for mode in MODES:
            for seed in range(args.seed, args.seed + args.seeds):
                check_training_out(_folder(args.out, mode, xi, seed), False, args.overwrite)
        if args.compare_eq5:
            folder = _folder(args.out, "dv", xi, args.seed, args.compare_eq5)
            check_training_out(folder, False, args.overwrite)
    if args.curve_on_test and args.headline_xi is not None:  # the curve's own attackers
        for xi in args.xi:
            check_training_out(_folder(args.out, "dv", xi, args.seed), False, args.overwrite)


def sweep_command(args: argparse.Namespace) -> None:
    """``advseg sweep``; see the module docstring."""
    import numpy as np

    from .evaluation.attack_eval import evaluate_attack
    from .evaluation.attacks import LearnedAttack
    from .evaluation.report import FIGURE_FILE, figure_slices, write_report
    from .evaluation.sweep import attack_row, baseline_rows, headline_row, write_outputs
    from .training.distributed import current_world

    started = time.perf_counter()
    check_output_dir(args.out)
    if args.json is not None:
        check_output_file(args.json, "--json")
    has_validation = args.dataset is not None or args.sample == ["phantom"]
    _check_plan(args, has_validation)
    free = available_memory()
    cache = SWEEP_CACHE_BYTES if free is None else min(SWEEP_CACHE_BYTES, free // 8)
    check_data_files(args, require_labels=False)
    from .training.device import select_device

    # evaluation runs where the model is: on --device, also when no attacker is trained here
    seg = load_model(args).to(select_device(args.device))
    organs = seg.spec.label_map.names
    test = eval_volumes(args, require_labels=False, cache_bytes=cache, label_map=seg.spec.label_map)
    attackers = _Attackers(args, seg)
    extra: dict[str, Any] = {
        "seg": seg.name,
        "organs": organs,
        "command": args.command_line,
        "test_subjects": test.names,
    }

    # 1. the headline xi, chosen on the validation subjects
    validation_rows: list[dict[str, Any]] = []
    if args.headline_xi is not None:
        xi, meets, chosen_by = args.headline_xi, None, "given (--headline-xi)"
    else:
        validation = _validation_volumes(args, seg) or []
        if not validation:
            raise InvalidInputError(
                "the validation split is empty, so the headline xi cannot be chosen on it: use "
                "more subjects, other --fractions, or --headline-xi X."
            )
        extra["validation_subjects"] = [v.name for v in validation]
        for candidate in _candidates(args, attackers):
            for loaded in attackers.seeds("dv", candidate, 1):
                report = evaluate_attack(seg, LearnedAttack(loaded), validation)
                if not validation_rows:
                    validation_rows += baseline_rows(report)
                label = f"I_DV (xi = {candidate:g})"
                validation_rows.append(attack_row(label, candidate, "dv", report))
                print(f"validation {label}: p {validation_rows[-1]['p']:.3f}")
        row, meets = headline_row(validation_rows)
        if row is None:
            raise InvalidInputError("no D+V attacker to choose the headline xi from.")
        xi, chosen_by = row["xi"], "validation split"
    extra["headline"] = {"xi": xi, "chosen_by": chosen_by, "meets_30_percent_at_p_0.1": meets}
    print(f"headline: xi = {xi:g}, chosen by the {chosen_by}")

    # 2. the test rows, each over its seeds, evaluated once
    rows, headline_reports, first_report = _test_rows(args, seg, attackers, xi, test, organs, extra)
    curve_rows: list[dict[str, Any]] = []
    if args.curve_on_test:  # 3. every candidate's first seed on the test subjects too
        known = {xi: first_report} if first_report is not None else {}
        curve_rows = _curve_rows(seg, attackers, _candidates(args, attackers), test, known)
    if headline_reports:
        rows += _random_row(args, seg, rows, test)
        _headline_extras(seg, headline_reports, test, extra)
    if not current_world().is_main:  # the others evaluated their shares; rank 0 writes
        return
    if headline_reports:
        slices = figure_slices(seg, LearnedAttack(headline_reports[0]), test[0])
        args.out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.out / FIGURE_FILE, **slices)
    extra["seconds"] = round(time.perf_counter() - started, 1)
    written = write_outputs(rows, organs, args.out, extra, validation_rows, curve_rows)
    written.append(write_report(args.out))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
        written.append(args.json)
    print(f"sweep took {extra['seconds'] / 60:.1f} min")
    print("wrote " + ", ".join(str(p) for p in written))


def _test_rows(
    args: argparse.Namespace,
    seg: Any,
    attackers: _Attackers,
    xi: float,
    test: Any,
    organs: list[str],
    extra: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[Any], Any]:
    """The test rows, the headline D+V attackers and the report of the first of them (or None)."""
    from .evaluation.attack_eval import evaluate_attack
    from .evaluation.attacks import LearnedAttack
    from .evaluation.seeded import average_over_seeds, interval_fields
    from .evaluation.sweep import attack_row, baseline_rows

    rows: list[dict[str, Any]] = []
    headline: list[Any] = []
    first_report = None
    for mode in MODES:
        loaded = attackers.seeds(mode, xi, args.seeds)
        if not loaded:
            print(f"no {mode} attacker at xi = {xi:g}: its row is left out")
            continue
        reports = [evaluate_attack(seg, LearnedAttack(one), test) for one in loaded]
        if not rows:
            rows += baseline_rows(reports[0])
            extra["reference"] = reports[0].reference
        label = f"{SYMBOLS[mode]} (xi = {xi:g})"
        row = {
            **attack_row(label, xi, mode, average_over_seeds(reports)),
            **interval_fields(reports, organs, seed=args.seed),
            "split": "test",
        }
        rows.append(row)
        print(f"test {label}, {len(reports)} seed(s): p {row['p']:.3f}")
        if mode == "dv":
            headline, first_report = loaded, reports[0]
    if args.compare_eq5 and headline:
        for loaded in attackers.seeds("dv", xi, 1, args.compare_eq5):
            report = evaluate_attack(seg, LearnedAttack(loaded), test)
            label = f"I_DV (xi = {xi:g}, eq. 5 {args.compare_eq5})"
            rows.append({**attack_row(label, xi, "dv-eq5", report), "split": "test"})
            print(f"test {label}: p {rows[-1]['p']:.3f}")
    return rows, headline, first_report


def _curve_rows(
    seg: Any, attackers: _Attackers, candidates: list[float], test: Any, known: dict[float, Any]
) -> list[dict[str, Any]]:
    """The first-seed D+V attacker of each candidate xi on the test subjects (``test-curve``).

    ``known`` holds reports already made of those attackers on these subjects (the headline's
    first seed), which are reused rather than evaluated again.
    """
    from .evaluation.attack_eval import evaluate_attack
    from .evaluation.attacks import LearnedAttack
    from .evaluation.sweep import attack_row

    rows = []
    for candidate in candidates:
        loaded = attackers.seeds("dv", candidate, 1)
        if not loaded:
            print(f"no dv attacker at xi = {candidate:g}: its test-curve row is left out")
            continue
        if candidate in known:
            report = known[candidate]
        else:
            report = evaluate_attack(seg, LearnedAttack(loaded[0]), test)
        label = f"I_DV (xi = {candidate:g}, first seed)"
        rows.append({**attack_row(label, candidate, "dv", report), "split": "test-curve"})
        print(f"test curve {label}: p {rows[-1]['p']:.3f}")
    return rows


def _random_row(args: argparse.Namespace, seg: Any, rows: list[dict], test: Any) -> list[dict]:
    from .evaluation.attack_eval import evaluate_attack
    from .evaluation.attacks import RandomAttack
    from .evaluation.sweep import attack_row

    learned = next(row for row in rows if row["mode"] == "dv")
    # matched on the in-body size, so that the baseline cannot spend its budget in air
    report = evaluate_attack(seg, RandomAttack(learned["p_hu_body"], "dv", seed=args.seed), test)
    label = f"random D+V (in-body p matched to xi = {learned['xi']:g})"
    return [{**attack_row(label, None, "random", report), "matched_xi": learned["xi"]}]


def _headline_extras(seg: Any, loaded: list[Any], test: Any, extra: dict[str, Any]) -> None:
    """The latent diversity of the first headline attacker and the damage of posterior draws."""
    from .evaluation.attack_eval import evaluate_attack
    from .evaluation.attacks import LearnedAttack
    from .evaluation.sweep import latent_diversity
    from .inference import to_model_grid

    images = to_model_grid(test[0], seg.spec).images
    middle = images.shape[0] // 2
    first = loaded[0]
    extra["latent_diversity"] = latent_diversity(
        LearnedAttack(first), images[middle - 4 : middle + 4]
    )
    extra["posterior_draws"] = []
    for seed in (1, 2):
        summary = evaluate_attack(seg, LearnedAttack(first, "posterior", 1.0, seed), test).summary()
        keys = ("decrease_warped", "success_warped", "p")
        extra["posterior_draws"].append({"seed": seed, **{k: summary[k] for k in keys}})
