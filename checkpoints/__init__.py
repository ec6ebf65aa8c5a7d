"""Shipped pretrained bases, installed as package data so that a base name resolves in any install.

`cogbase-6l/` is the project's own GPT-2-architecture base (see its MODEL_CARD.md). Use it by name
(`--base cogbase-6l`, the default); `interp.models.resolve_base` maps a name to its folder.
"""
