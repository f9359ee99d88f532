"""GST: an auto-regressive tokenized spatial world model."""

__version__ = "0.1.0"
