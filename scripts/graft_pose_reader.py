"""Give a world model the pose reader of another run: the donor's reader (code features, single-image and
pair stems, pose head, cell heads) becomes the model's pose reader (``GSTModelConfig.pose_reader``),
which alone serves the pose head, while every input of the backbone stays as it was (views, chat and the
camera codes are unchanged). Typical donor: a reader trained from scratch on reader-only pairs.

    python scripts/graft_pose_reader.py --base assets/gst-tiny --donor runs/lv_corr32_beta01_30 --out DIR

Writes a training export (gst_model.json + model.safetensors) that `--init-from`, `gst eval` and
`gst train export --tokenizers` read; the donor is recorded under extra["pose_reader_from"]. Both must
use the same tokenizers and vocabulary.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gst.api_checkpoint import read_backbone_meta, resolve_checkpoint
from gst.eval.report import sha256_of
from gst.model import load_gst_model
from gst.model.backbone import save_gst_model
from gst.training.gst_init import graft_pose_reader


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the world model (a checkpoint, export or run folder)")
    p.add_argument("--donor", required=True, help="the run whose reader becomes the pose reader")
    p.add_argument("--out", required=True, help="output folder (a training export)")
    args = p.parse_args()
    base, donor = resolve_checkpoint(args.base), resolve_checkpoint(args.donor)
    base_meta, donor_meta = read_backbone_meta(base.model_dir), read_backbone_meta(donor.model_dir)
    for kind in ("image", "camera"):
        a = base_meta["extra"]["tokenizers"][kind]["sha256"]
        b = donor_meta["extra"]["tokenizers"][kind]["sha256"]
        if a != b:
            raise SystemExit(
                f"--donor {args.donor}: trained with another {kind} tokenizer ({b[:12]}) than --base "
                f"({a[:12]}); a pose reader reads the base's codes"
            )
    model = graft_pose_reader(load_gst_model(base.model_dir), load_gst_model(donor.model_dir))
    extra = dict(base_meta["extra"])
    extra["tokenizers"] = {
        kind: {"path": str(base.tokenizer_dirs[kind].resolve()), "sha256": entry["sha256"]}
        for kind, entry in base_meta["extra"]["tokenizers"].items()
    }
    text = str(extra["text_tokenizer"])
    if text != "byt5" and not Path(text).is_absolute() and (base.root / text).exists():
        extra["text_tokenizer"] = str((base.root / text).resolve())
    extra["pose_reader_from"] = {
        "path": str(donor.model_dir.resolve()),
        "sha256": sha256_of(donor.model_dir / "model.safetensors"),
    }
    out = save_gst_model(model, args.out, extra=extra)
    print(f"wrote {out}: {args.base} with the pose reader of {args.donor}")


if __name__ == "__main__":
    main()
