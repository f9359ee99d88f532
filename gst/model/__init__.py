"""The GST backbone: construction (``backbone``), presets (``config``), task layouts (``sequences``),
the training loss (``loss``) and decoding (``sampling``). Benchmarks live in ``gst.model.bench``."""

from gst.model.backbone import (
    GSTModel,
    GSTOutput,
    attach_vocabulary,
    build_gst_model,
    load_gst_model,
    read_gst_meta,
    save_gst_model,
)
from gst.model.config import BackboneConfig, GSTModelConfig, HeadKind, TokenLayout, get_preset
from gst.model.loss import LossConfig, compute_loss, gst_loss
from gst.model.sampling import (
    GenerationOutput,
    SamplingConfig,
    estimate_camera_tokens,
    generate_camera_and_image,
    generate_image_given_camera,
    generate_text,
    read_pose_head,
)
from gst.model.sequences import (
    SequenceBatch,
    SequenceConfig,
    build_chat_example,
    collate_chat,
    collate_pose_batch,
)

__all__ = [
    "BackboneConfig",
    "GSTModel",
    "GSTModelConfig",
    "GSTOutput",
    "GenerationOutput",
    "HeadKind",
    "LossConfig",
    "SamplingConfig",
    "SequenceBatch",
    "SequenceConfig",
    "TokenLayout",
    "attach_vocabulary",
    "build_chat_example",
    "build_gst_model",
    "collate_chat",
    "collate_pose_batch",
    "compute_loss",
    "estimate_camera_tokens",
    "generate_camera_and_image",
    "read_pose_head",
    "generate_image_given_camera",
    "generate_text",
    "get_preset",
    "gst_loss",
    "load_gst_model",
    "read_gst_meta",
    "save_gst_model",
]
