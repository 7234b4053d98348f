"""Carry a run's model out of tailor: a merged standalone Hugging Face folder, or one GGUF file."""
