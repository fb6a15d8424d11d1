# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Character tokenizer of the omni-encoders audio decoder: transformers' `VitsTokenizer` with a built-in vocabulary."""

from __future__ import annotations

import unicodedata

from transformers import VitsTokenizer
from transformers.tokenization_python import PreTrainedTokenizer


PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"
# Lower-case English letters, digits, the space and the punctuation that shapes prosody. Everything else is dropped
# by the normalisation (upper case is lowered first).
DEFAULT_CHARACTERS = " !',-.:;?" + "abcdefghijklmnopqrstuvwxyz" + "0123456789"


def default_vocabulary() -> dict[str, int]:
    """`{"<pad>": 0, "<unk>": 1, " ": 2, ...}`: the 47 tokens [`OmniAudioDecoderConfig`]'s `vocab_size` matches."""
    return {PAD_TOKEN: 0, UNK_TOKEN: 1, **{char: index + 2 for index, char in enumerate(DEFAULT_CHARACTERS)}}


class OmniAudioDecoderTokenizer(VitsTokenizer):
    """
    Character-level tokenizer of [`OmniAudioDecoderModel`]: transformers' [`VitsTokenizer`] (lower-casing, dropping
    characters outside the vocabulary, one id per character) that also works without a vocabulary file, with the
    default English character set of [`default_vocabulary`].

    Unlike VITS, no blank token is interspersed by default (`add_blank=False`): the durations found by Monotonic
    Alignment Search give every character at least one mel frame, and blanks would double that minimum. Phonemisation
    is off (it needs the `phonemizer` package and an espeak backend).

    Args:
        vocab_file (`str`, *optional*):
            A `vocab.json` mapping characters to ids; defaults to [`default_vocabulary`].
        pad_token, unk_token (`str`, *optional*, defaults to `"<pad>"` and `"<unk>"`):
            Padding and unknown tokens (must be in the vocabulary).
        add_blank (`bool`, *optional*, defaults to `False`):
            Intersperse the padding token (id 0) between characters, as VITS does.
        normalize (`bool`, *optional*, defaults to `True`):
            Lower-case the text, fold the accents of characters that are not in the vocabulary ("é" -> "e", "ﬁ" ->
            "fi", by their Unicode compatibility decomposition) and drop the characters that are still not in it.

    Example:

    ```python
    >>> from omni_encoders import OmniAudioDecoderTokenizer
    >>> tokenizer = OmniAudioDecoderTokenizer()
    >>> tokenizer("Hi!").input_ids
    [18, 19, 3]
    ```
    """

    def __init__(
        self,
        vocab_file: str | None = None,
        pad_token: str = PAD_TOKEN,
        unk_token: str = UNK_TOKEN,
        add_blank: bool = False,
        normalize: bool = True,
        **kwargs,
    ):
        if kwargs.pop("phonemize", False):
            raise ValueError("OmniAudioDecoderTokenizer works on characters; phonemize=True is not supported.")
        kwargs.pop("is_uroman", None)
        if vocab_file is not None:
            super().__init__(
                vocab_file, pad_token=pad_token, unk_token=unk_token, add_blank=add_blank, normalize=normalize,
                phonemize=False, **kwargs,
            )
            return
        # The same state `VitsTokenizer.__init__` builds from a file, from the built-in vocabulary.
        self.encoder = default_vocabulary()
        self.decoder = {index: token for token, index in self.encoder.items()}
        self.language = kwargs.pop("language", None)
        self.add_blank = add_blank
        self.normalize = normalize
        self.phonemize = False
        self.is_uroman = False
        PreTrainedTokenizer.__init__(
            self,
            pad_token=pad_token,
            unk_token=unk_token,
            language=self.language,
            add_blank=add_blank,
            normalize=normalize,
            phonemize=False,
            is_uroman=False,
            special_tokens_pattern="none",
            **kwargs,
        )


    def normalize_text(self, input_string: str) -> str:
        """VITS' normalisation (lower-casing around the vocabulary's entries), after folding the accents of the
        characters that are not in the vocabulary, so that "Café" is spoken as "cafe" rather than "caf"."""
        folded = "".join(
            char if char in self.encoder or char.lower() in self.encoder else _without_accents(char)
            for char in input_string
        )
        return super().normalize_text(folded)


def _without_accents(char: str) -> str:
    """`char` by its compatibility decomposition without combining marks: "é" -> "e", "ﬁ" -> "fi", "€" -> "€"."""
    return "".join(part for part in unicodedata.normalize("NFKD", char) if not unicodedata.combining(part))


OmniAudioDecoderTokenizer.register_for_auto_class("AutoTokenizer")

__all__ = ["DEFAULT_CHARACTERS", "OmniAudioDecoderTokenizer", "default_vocabulary"]
