"""The `gst` command. Each command group is registered by the subpackage that owns it.

Subcommands map to typed functions; handlers import their heavy dependencies lazily so that
`gst --help` stays fast. Nothing imports this module.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Command groups, and the modules that add subcommands to them. A module contributes to a group by
# defining `register_<group>(subparsers)`, adding parsers whose defaults carry
# `func=handler(args) -> int | None`. Modules not built yet are skipped.
_GROUPS: dict[str, str] = {
    "data": "make and inspect datasets (procedural world, QA, summaries)",
    "train": "train the tokenizers and the world model",
    "eval": "evaluate tokenizers, poses, views and spatial QA",
}
_MODULES: tuple[str, ...] = (
    "gst.data.commands",
    "gst.data.qa_commands",
    "gst.tokenizers.commands",
    "gst.training.commands",
    "gst.training.gst_commands",
    "gst.training.answer_reader_commands",
    "gst.training.focal_reader_commands",
    "gst.training.export_commands",
    "gst.eval.commands",
    "gst.eval.qa_commands",
    "gst.api_commands",
    "gst.bench",
)


def _load_modules() -> list:
    modules = []
    for module_name in _MODULES:
        try:
            modules.append(importlib.import_module(module_name))
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gst",
        description="GST: an auto-regressive tokenized spatial world model. Images and cameras "
        "become tokens; one causal transformer estimates poses, synthesizes views and answers "
        "spatial questions.",
    )
    groups = parser.add_subparsers(dest="group", metavar="COMMAND")
    modules = _load_modules()
    for name, help_text in _GROUPS.items():
        registrars = [getattr(m, f"register_{name}") for m in modules if hasattr(m, f"register_{name}")]
        if not registrars:
            continue
        group = groups.add_parser(name, help=help_text, description=help_text)
        sub = group.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
        for register in registrars:
            register(sub)
    # Top-level commands (`gst bench`, `gst pose`, ...) come from `register_top(subparsers)`.
    for m in modules:
        if hasattr(m, "register_top"):
            m.register_top(groups)
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
