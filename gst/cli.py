"""The `gst` command. Each command group is registered by the subpackage that owns it.

Subcommands map to typed functions; handlers import their heavy dependencies lazily so that
`gst --help` stays fast. Nothing imports this module.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (group, help, module that owns it). Each module defines `register(subparsers)`, adding parsers
# whose defaults carry `func=handler(args) -> int | None`.
_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("data", "make and inspect datasets (procedural world, summaries)", "gst.data.commands"),
    ("train", "train the tokenizers and the world model", "gst.training.commands"),
    ("eval", "evaluate tokenizers, poses, views and spatial QA", "gst.eval.commands"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gst",
        description="GST: an auto-regressive tokenized spatial world model. Images and cameras "
        "become tokens; one causal transformer estimates poses, synthesizes views and answers "
        "spatial questions.",
    )
    groups = parser.add_subparsers(dest="group", metavar="COMMAND")
    for name, help_text, module_name in _GROUPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue  # group not built yet
        group = groups.add_parser(name, help=help_text, description=help_text)
        module.register(group.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        code = func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        # User-causable errors carry messages that name the file/field and what to do.
        print(f"gst: error: {err}", file=sys.stderr)
        return 1
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
