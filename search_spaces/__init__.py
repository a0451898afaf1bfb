"""Declarative search-space presets (YAML). Refer to one by file path or by name, e.g. ``text_classification``."""
