"""Checking and tidying a user's text prompt (shared by retrieval, generation and the app)."""
from __future__ import annotations

import re
import unicodedata

MAX_PROMPT_CHARS = 500      # longer prompts are cut at a word boundary (motion captions are short)


class PromptError(ValueError):
    """The prompt cannot be used (empty, not text)."""


def clean_prompt(text, max_chars: int = MAX_PROMPT_CHARS) -> str:
    """Whitespace collapsed, control characters removed, cut to ``max_chars`` at a word
    boundary. Any script and emoji are kept. Raises PromptError for non-strings and for
    prompts with no visible character."""
    if not isinstance(text, str):
        raise PromptError(f"the prompt must be text, got {type(text).__name__}")
    text = "".join(ch for ch in text if ch in "\t\n" or unicodedata.category(ch)[0] != "C")
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        raise PromptError("the prompt is empty: describe a motion, e.g. \"a person does a cartwheel\"")
    if len(text) > max_chars:
        cut = text[:max_chars]
        space = cut.rfind(" ")
        text = (cut[:space] if space > max_chars // 2 else cut).rstrip()
    return text


def is_truncated(original: str, cleaned: str) -> bool:
    return len(re.sub(r"\s+", " ", original).strip()) > len(cleaned)


__all__ = ["MAX_PROMPT_CHARS", "PromptError", "clean_prompt", "is_truncated"]
