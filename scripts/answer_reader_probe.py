"""`gst train answer-reader` under its earlier name: the answer reader began as this probe and moved into
the package (gst.model.answer_reader, gst.training.answer_reader) on 2026-12-06; the commands of
docs/experiments.md that call this script run unchanged (they also write OUT/answer_reader now)."""

from __future__ import annotations

import argparse
import sys

from gst.training.answer_reader import train_answer_reader
from gst.training.answer_reader_commands import __doc__ as DOC
from gst.training.answer_reader_commands import add_arguments

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    sys.exit(train_answer_reader(ap.parse_args()))
