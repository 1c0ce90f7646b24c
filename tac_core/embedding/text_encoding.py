"""Exact, fast CLIP text encoding: run each batch only as long as its longest prompt.

CLIP's text transformer is causal (a token attends only to earlier tokens) and pools one position, the
end-of-text token. Nothing after that position can change the result, so padding a 6-token prompt to 77
tokens is wasted work. Prompts are tokenised, sorted by the position that is pooled, and each batch runs on
its tokens truncated to its longest prompt, with the positional embedding and causal mask sliced to match.
The result equals ``model.encode_text`` up to float rounding; text towers for which that does not hold
(Hugging Face towers, no causal mask, pooling the last position) are encoded with ``encode_text`` itself.

Tokenising is the other cost: open_clip's tokenizer cleans every prompt with ftfy and a regex before BPE,
~9,000 prompts/s here, so 82k names × 7 templates took a minute, longer than a GPU needs to encode them. A
vocabulary's prompts are templates around names, and CLIP's BPE never merges across a space or across a
letter/punctuation boundary, so each name and each template is tokenised once and the pieces are joined
(:func:`vocabulary_tokens`); names for which joining could differ from tokenising the whole prompt
(non-ASCII, ``&`` or ``<``, a name ending in punctuation before a template's punctuation) are tokenised whole.
Tests compare the joined tokens with the tokenizer's on WordNet and on edge cases.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import numpy as np
import open_clip
import regex as re
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from .models import LoadedModel, inference_context
from ..progress import CancelToken, ProgressFn, check_cancel, report
from ..inputs.prompts import TAC_TEMPLATES, template_set

STAGE = "embedding vocabulary"
DEFAULT_BATCH_SIZE = 512
_CHUNK = 16384  # prompts tokenised, sorted and encoded together: bounds memory for 575k prompts
_POOLED_POSITIONS = ("argmax", "eos", "first")  # pool types whose pooled position is known before encoding


def encode_texts(
    loaded: LoadedModel,
    texts: Iterable[str],
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
) -> np.ndarray:
    """Embed each text as it is: an (n, d) float32 array of L2-normalised rows, in input order."""
    texts = _as_texts(texts, "text")
    _check_batch_size(batch_size)
    out = np.empty((len(texts), loaded.embed_dim), dtype=np.float32)
    for start in range(0, len(texts), _CHUNK):
        chunk = texts[start:start + _CHUNK]
        out[start:start + len(chunk)] = _encode_chunk(
            loaded, chunk, batch_size, cancel,
            lambda done, start=start: report(progress, STAGE, start + done, len(texts)),
        )
    return out


def encode_vocabulary(
    loaded: LoadedModel,
    names: Iterable[str],
    templates: str | Iterable[str] = TAC_TEMPLATES,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
) -> np.ndarray:
    """Embed each name as TAC does: the mean over ``templates`` of the normalised prompt embeddings, normalised.

    ``templates`` is a set name of :mod:`tac_core.inputs.prompts` or a list of templates with one ``{}``. Progress
    counts names.
    """
    names = _as_texts(names, "name")
    templates = template_set(templates)
    _check_batch_size(batch_size)
    out = np.empty((len(names), loaded.embed_dim), dtype=np.float32)
    per_chunk = max(1, _CHUNK // len(templates))
    for start in range(0, len(names), per_chunk):
        chunk = names[start:start + per_chunk]
        prompts = [template.format(name) for name in chunk for template in templates]
        prompt_vectors = _encode_chunk(
            loaded, prompts, batch_size, cancel,
            lambda done, start=start: report(progress, STAGE, start + done // len(templates), len(names)),
            tokens=vocabulary_tokens(loaded.tokenizer, chunk, templates),
        )
        means = prompt_vectors.reshape(len(chunk), len(templates), -1).mean(axis=1)
        out[start:start + len(chunk)] = means / np.linalg.norm(means, axis=1, keepdims=True)
    return out


def supports_truncation(model: torch.nn.Module) -> bool:
    """True when ``model``'s text tower is open_clip's causal ``CLIP`` tower pooling a position known from the
    tokens, i.e. when truncating after that position cannot change the embedding."""
    if not isinstance(model, open_clip.CLIP) or type(model).encode_text is not open_clip.CLIP.encode_text:
        return False
    if model.text_pool_type not in _POOLED_POSITIONS or model.attn_mask is None:
        return False
    mask = model.attn_mask.detach().float().cpu()
    causal = torch.full(mask.shape, float("-inf")).triu_(1)
    return torch.equal(mask, causal)


def _encode_chunk(
    loaded: LoadedModel,
    texts: list[str],
    batch_size: int,
    cancel: Optional[CancelToken],
    on_progress: Callable[[int], None],
    tokens: Optional[torch.Tensor] = None,
) -> np.ndarray:
    model, device = loaded.model, loaded.device
    tokens = loaded.tokenizer(texts) if tokens is None else tokens
    truncate = supports_truncation(model)
    if truncate:
        positions = _pooled_positions(model, tokens)
        order = torch.argsort(positions, stable=True)
    else:
        order = torch.arange(len(texts))
    batches = []  # kept on the device until the chunk ends: no GPU sync per batch
    done = 0
    while done < len(texts):
        check_cancel(cancel)
        size = (truncated_batch_rows(positions, order, done, batch_size, tokens.shape[1], device) if truncate
                else batch_size)
        rows = order[done:done + size]
        with inference_context(device):
            if truncate:
                features = _encode_truncated(model, tokens[rows], positions[rows], device)
            else:
                features = model.encode_text(tokens[rows].to(device))
            batches.append(F.normalize(features.float(), dim=-1))
        done += len(rows)
        on_progress(done)
    out = np.empty((len(texts), loaded.embed_dim), dtype=np.float32)
    if batches:
        out[order.numpy()] = torch.cat(batches).cpu().numpy()
    return out


def truncated_batch_rows(positions: torch.Tensor, order: torch.Tensor, done: int, batch_size: int,
                         full_length: int, device: torch.device) -> int:
    """Rows in the next truncated batch (``positions``: each prompt's pooled token, ``order``: the prompts sorted
    by it, ``done`` of them encoded): ``batch_size``, or on a GPU as many short prompts as fit the tokens of
    ``batch_size`` full-length rows (at most 16×). A GPU runs short batches below its capacity: 2,048-4,096
    prompts of 6-19 tokens went 1.4× faster than 512 on an H200. A CPU is not faster with larger batches."""
    if device.type == "cpu":
        return batch_size
    sorted_lengths = positions[order[done:done + 16 * batch_size]] + 1  # ascending: ``order`` sorts them
    fits = torch.arange(1, len(sorted_lengths) + 1) * sorted_lengths <= batch_size * full_length
    return max(batch_size, int(fits.sum()))


def vocabulary_tokens(tokenizer, names: list[str], templates: tuple[str, ...]) -> torch.Tensor:
    """``tokenizer([t.format(n) for n in names for t in templates])``, tokenising each name and template once.

    Only open_clip's own BPE tokenizer (cleaning ``"lower"``, no reduction) is joined from pieces; any other
    tokenizer gets the whole prompts. See the module docstring for when a name is tokenised whole.
    """
    prompts_of = lambda name: [template.format(name) for template in templates]  # noqa: E731
    if not _joinable_tokenizer(tokenizer):
        return tokenizer([prompt for name in names for prompt in prompts_of(name)])
    pieces = []
    for template in templates:
        before, after = template.split("{}")
        if not (_plain(before) and _plain(after) and (not before or before[-1].isspace())):
            return tokenizer([prompt for name in names for prompt in prompts_of(name)])
        pieces.append((_encode_plain(tokenizer, before), _encode_plain(tokenizer, after), after))
    context = tokenizer.context_length
    sot, eot = tokenizer.sot_token_id, tokenizer.eot_token_id
    out = np.zeros((len(names) * len(templates), context), dtype=np.int64)
    row = 0
    for name in names:
        joinable = _plain(name) and name.strip() != ""
        name_ids = _encode_plain(tokenizer, name) if joinable else None
        for template, (before_ids, after_ids, after) in zip(templates, pieces):
            if joinable and (not after or after[0].isspace() or (name.rstrip()[-1:].isalnum() and
                                                                   not after[0].isalnum() and after[0] != "'")):
                ids = [sot, *before_ids, *name_ids, *after_ids, eot]
                if len(ids) > context:
                    ids = ids[:context]
                    ids[-1] = eot
                out[row, :len(ids)] = ids
            else:
                out[row] = tokenizer([template.format(name)], context_length=context)[0].numpy()
            row += 1
    return torch.from_numpy(out)


def _encode_plain(tokenizer, text: str) -> list[int]:
    """``tokenizer.encode(text)`` for :func:`_plain` text, without ftfy and HTML unescaping (both leave such
    text unchanged, and were half the tokenizer's time)."""
    ids = []
    for token in re.findall(tokenizer.pat, " ".join(text.split()).lower()):
        token = "".join(tokenizer.byte_encoder[b] for b in token.encode("utf-8"))
        ids.extend(tokenizer.encoder[piece] for piece in tokenizer.bpe(token).split(" "))
    return ids


def _joinable_tokenizer(tokenizer) -> bool:
    lower = getattr(open_clip.tokenizer, "_clean_lower", None)
    return (type(tokenizer) is open_clip.tokenizer.SimpleTokenizer and getattr(tokenizer, "reduction_fn", None) is None
            and lower is not None and getattr(tokenizer, "clean_fn", None) is lower)


def _plain(text: str) -> bool:
    """Printable ASCII without ``&`` and ``<``: ftfy and HTML unescaping leave it as it is."""
    return text.isascii() and text.isprintable() and "&" not in text and "<" not in text


def _pooled_positions(model: open_clip.CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """The position ``text_global_pool`` takes for each row, from the tokens alone."""
    if model.text_pool_type == "argmax":  # the end-of-text token has the largest id
        return tokens.argmax(dim=-1)
    if model.text_pool_type == "eos":
        return (tokens == model.text_eos_id).int().argmax(dim=-1)
    return torch.zeros(len(tokens), dtype=torch.long)


def _encode_truncated(
    model: open_clip.CLIP, tokens: torch.Tensor, positions: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """``CLIP.encode_text`` on ``tokens[:, :length]``, where ``length`` ends at the last pooled position."""
    length = int(positions.max()) + 1
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens[:, :length].to(device)).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(len(x), device=x.device), positions.to(x.device)]
    if model.text_projection is None:
        return x
    if isinstance(model.text_projection, torch.nn.Linear):
        return model.text_projection(x)
    return x @ model.text_projection


def _as_texts(texts: Iterable[str], what: str) -> list[str]:
    if isinstance(texts, str):
        raise InvalidInputError(f"Expected a list of {what}s, got the single string {texts!r}.")
    texts = list(texts)
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError(f"Every {what} must be a non-empty string; got {text!r}.")
    return texts


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}.")
