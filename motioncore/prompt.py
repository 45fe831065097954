"""Checking and tidying a user's text prompt (shared by retrieval, generation and the app)."""
from __future__ import annotations

import re
import unicodedata

MAX_PROMPT_CHARS = 500      # longer prompts are cut at a word boundary (motion captions are short)


class PromptError(ValueError):
    """The prompt cannot be used (empty, not text)."""


def clean_prompt(text, max_chars: int | None = MAX_PROMPT_CHARS) -> str:
    """Unicode NFC, whitespace collapsed, control characters removed, cut to ``max_chars``
    (None: no cut) at a word boundary. Any script and emoji are kept. Raises PromptError for
    non-strings and for prompts with no visible character."""
    if not isinstance(text, str):
        raise PromptError(f"the prompt must be text, got {type(text).__name__}")
    text = unicodedata.normalize("NFC", text)
    # drop control characters (Cc) only: format characters such as the zero-width joiner hold
    # emoji sequences (🤸‍♀️) together
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cc" or ch in "\t\n")
    text = re.sub(r"\s+", " ", text).strip()
    if not any(unicodedata.category(ch)[0] not in "CZ" for ch in text):   # only invisible ones
        text = ""
    if not text:
        raise PromptError("the prompt is empty: describe a motion, e.g. \"a person does a cartwheel\"")
    if max_chars is not None and len(text) > max_chars:
        cut = text[:max_chars]
        space = cut.rfind(" ")
        text = (cut[:space] if space > max_chars // 2 else cut).rstrip()
    return text


def is_truncated(original: str, cleaned: str) -> bool:
    """Whether ``clean_prompt`` cut the text (not merely tidied whitespace/control chars)."""
    try:
        return clean_prompt(original, max_chars=None) != cleaned
    except PromptError:
        return False


__all__ = ["MAX_PROMPT_CHARS", "PromptError", "clean_prompt", "is_truncated"]
