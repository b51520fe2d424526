"""``advseg inspect-model``: what a segmentation model is and how it will be fed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ._cli_common import add_model_argument, load_model, model_source
from .errors import InvalidInputError
from .validation import check_output_file


def add_model_commands(commands: Any) -> None:
    """Register inspect-model on the ``advseg`` subparsers."""
    inspect = commands.add_parser(
        "inspect-model",
        help="print a model's spec (derived for an nnU-Net folder) and check that it runs",
        description=(
            "Load a segmentation model as the other commands would, run it once at a size its "
            "spec allows, and print how it is fed: its organs, pixel spacing, normalisation, "
            "padding multiple and slice orientation, with the spec as JSON. For an nnU-Net "
            "results folder the spec is derived from plans.json and dataset.json; check it, and "
            "save it with --save-spec to use or edit it elsewhere."
        ),
    )
    add_model_argument(inspect)
    inspect.add_argument(
        "--save-spec",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the spec as a spec file (an existing file is kept unless --overwrite)",
    )
    inspect.add_argument(
        "--overwrite", action="store_true", help="replace an existing --save-spec file"
    )
    inspect.set_defaults(handler=_inspect_model)


def _inspect_model(args: argparse.Namespace) -> None:
    from .model_spec import save_spec_file

    if args.save_spec is not None:
        check_output_file(args.save_spec, "--save-spec", (".json",))
        if args.save_spec.exists() and not args.overwrite:
            raise InvalidInputError(
                f"--save-spec {args.save_spec}: exists; choose another name or add --overwrite."
            )
    model = load_model(args)
    parameters = sum(parameter.numel() for parameter in model.network.parameters())
    print(f"model: {model_source(model, args.model)}")
    print(f"network: {type(model.network).__name__}, {parameters / 1e6:.2f} M parameters")
    print(f"fed as: {model.spec.describe()}")
    print("spec:")
    print(json.dumps(model.spec.to_dict(), indent=2))
    if args.save_spec is not None:
        args.save_spec.parent.mkdir(parents=True, exist_ok=True)
        save_spec_file(args.save_spec, model.spec)
        print(f"wrote {args.save_spec}")
