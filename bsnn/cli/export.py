"""`bsnn export --nir FILE`: the converted network as a NIR file, for other simulators and chips.

From --model and the conversion options (the flags of `bsnn convert`), or from a run folder:
RUN_DIR re-converts the run's checkpoint with the run's options (it must still be there, as it
was). What NIR carries, what it cannot (and is refused) and how sinabs runs the file:
docs/nir.md. Read it back with `bsnn.from_nir(FILE)`.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from bsnn.errors import ConfigError
from bsnn.nirio.options import EXPORT_DEFAULTS, POOLINGS
from bsnn.nirio.options import NETWORK_OPTIONS as NAMES
from bsnn.options import OPTION, SHORTCUTS, add_arguments, check_values, values_from_args

UNUSED = ("eval_size", "backend")  # simulation options that a NIR file does not hold
POOLING_HELP = ("sum: NIR SumPool2d with 1/k^2 folded into the next neurons' thresholds (read "
                "by sinabs, norse and most chips); avg: NIR AvgPool2d")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write the converted network to a NIR file",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR",
                   help="export this run's network (its checkpoint and options)")
    p.add_argument("--nir", required=True, metavar="FILE", help="the NIR file to write")
    p.add_argument("--pooling", choices=POOLINGS, default="sum",
                   help=f"{POOLING_HELP} (default: sum)")
    add_arguments(p, NAMES, unset={n: str(EXPORT_DEFAULTS[n]) if n in EXPORT_DEFAULTS
                                   else OPTION[n].shown or str(OPTION[n].default)
                                   for n in NAMES})
    for name in UNUSED:  # `bsnn convert`'s own, so that its command line works here as it is
        o = OPTION[name]
        replace(o, help=f"{o.help}; taken as bsnn convert takes it, it does not change the "
                "network").add_to(p, None, str(o.default))
    p.set_defaults(func=main)


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The options given as flags (shortcuts applied); the others are None."""
    values = values_from_args(args, unset=(*NAMES, *UNUSED))
    return {k: v for k, v in values.items() if v is not None}


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bsnn.nirio.rebuild import check_rebuilt, export, run_values

    given = _given(args)
    if args.run_dir and given:
        flags = [OPTION[n].flag for n in given] + [s.flag for s in SHORTCUTS
                                                   if getattr(args, s.dest, False)]
        raise ConfigError(f"{', '.join(dict.fromkeys(flags))} cannot be combined with a run "
                          "folder: its network is the run's", "pass RUN_DIR alone, or --model "
                          "and the options you want without RUN_DIR")
    console = Console(highlight=False)
    recorded: list[dict[str, Any]] = []
    if args.run_dir:
        values, recorded = run_values(args.run_dir)
    else:
        values = {n: OPTION[n].default for n in NAMES} | EXPORT_DEFAULTS | given
        check_values(values)
    with console.status("converting and writing..."):
        path, network = export(values, args.nir, args.pooling)
    if recorded:
        check_rebuilt(network, recorded, args.run_dir)
    spiking = len(network.spiking)
    console.print(f"wrote {path}: {len(network.layers)} layers ({spiking} of IF neurons), "
                  f"pooling {args.pooling}, from {values['model']}\n"
                  f"  read it back: bsnn.from_nir({str(path)!r}); in sinabs: docs/nir.md",
                  soft_wrap=True)
    return 0
