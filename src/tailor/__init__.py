"""tailor: tailor a pretrained language model to one task and carry it to use."""

__version__ = "0.1.0"
