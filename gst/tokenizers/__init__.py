"""Tokenizers: image VQ (``image``), camera VQ over Plücker ray maps (``camera``), the text tokenizer
wrapper (``text``) and the unified vocabulary (``vocab``); configs in ``config``, files in ``io``.

Imports only ``gst.geometry`` (DESIGN.md). Submodules are imported explicitly (e.g.
``from gst.tokenizers.vocab import Vocabulary``) so that ``gst --help`` does not pay for torch.
"""
