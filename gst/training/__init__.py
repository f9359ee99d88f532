"""The one training loop (``loop.train``) and the stages that run through it: each stage is a small
``task.Task`` (tokenizers: ``image_task``, ``camera_task``; the GST backbone: ``gst_task``).

Submodules are imported explicitly so that ``gst --help`` does not pay for torch.
"""
