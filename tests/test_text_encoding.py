import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from tac_core.embedding import text_encoding
from tac_core.errors import InvalidInputError
from tac_core.embedding.models import ModelSpec, load_model
from tac_core.progress import CancelToken, Cancelled
from tac_core.inputs.prompts import TAC_TEMPLATES
from tac_core.inputs.vocabulary import Vocabulary
from tac_core.embedding.text_encoding import (encode_texts, encode_vocabulary, supports_truncation,
                                              truncated_batch_rows, vocabulary_tokens)

PROMPTS = [
    "x",
    "a photo of a cat.",
    "itap of a hairline crack.",
    "a bad photo of the solder bridge on a printed circuit board, seen from above in poor light.",
    "art of the delamination.",
    "a " + "very " * 90 + "long prompt that the tokenizer cuts at 77 tokens.",
    "a {} in a video game.",
    "a photo of the small dog.",
]


def _stock(loaded, texts):
    with torch.no_grad():
        return loaded.model.encode_text(loaded.tokenizer(texts), normalize=True).numpy()


def test_fast_encoding_equals_stock_encode_text_tiny(tiny_model):
    assert supports_truncation(tiny_model.model)
    fast = encode_texts(tiny_model, PROMPTS, batch_size=3)
    assert fast.dtype == np.float32 and fast.shape == (len(PROMPTS), 32)
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1, atol=1e-5)
    assert np.abs(fast - _stock(tiny_model, PROMPTS)).max() < 1e-4


@pytest.mark.slow  # builds the full-size ViT-B-32 (150 M parameters)
def test_fast_encoding_equals_stock_encode_text_vit_b32():
    loaded = load_model(ModelSpec("ViT-B-32", "none"), "cpu")  # random weights: builds without a download
    assert supports_truncation(loaded.model)
    prompts = PROMPTS[:5]  # 3 to 22 tokens; the stock pass runs all 77 positions, so keep it short
    fast = encode_texts(loaded, prompts, batch_size=2)
    assert fast.shape == (len(prompts), 512)
    assert np.abs(fast - _stock(loaded, prompts)).max() < 1e-4


def test_gpu_batches_hold_more_short_prompts_and_give_the_same_vectors(tiny_model, monkeypatch):
    positions = torch.tensor([5, 5, 5, 5, 8, 8, 20, 76, 76])  # the pooled positions, sorted
    order = torch.arange(len(positions))
    gpu = torch.device("cuda")
    assert truncated_batch_rows(positions, order, 0, 2, 77, torch.device("cpu")) == 2
    assert truncated_batch_rows(positions, order, 0, 2, 77, gpu) == 7  # 7 rows × 21 tokens <= 2 × 77
    assert truncated_batch_rows(positions, order, 7, 2, 77, gpu) == 2  # never fewer than batch_size

    sizes = []

    def spy(positions, order, done, batch_size, full_length, device):
        sizes.append(truncated_batch_rows(positions, order, done, batch_size, full_length, gpu))
        return sizes[-1]

    monkeypatch.setattr(text_encoding, "truncated_batch_rows", spy)  # batches as a GPU would make them
    fast = encode_texts(tiny_model, PROMPTS, batch_size=2)
    assert max(sizes) > 2 and sum(sizes) == len(PROMPTS)
    assert np.abs(fast - _stock(tiny_model, PROMPTS)).max() < 1e-4


def test_towers_that_cannot_be_truncated_use_encode_text(tiny_model, monkeypatch):
    model = copy.deepcopy(tiny_model.model)
    model.text_pool_type = "last"  # pools the last of 77 positions: padding matters
    loaded = replace(tiny_model, model=model)
    assert not supports_truncation(model)
    expected = _stock(loaded, PROMPTS)
    calls = []
    original = model.encode_text
    monkeypatch.setattr(model, "encode_text", lambda tokens: calls.append(tokens.shape) or original(tokens))
    result = encode_texts(loaded, PROMPTS, batch_size=5)
    assert calls == [(5, 77), (3, 77)]
    np.testing.assert_allclose(result, expected, atol=1e-6)


def test_vocabulary_is_the_normalised_mean_over_templates(tiny_model):
    names = ["cat", "hairline crack", "solder bridge"]
    vectors = encode_vocabulary(tiny_model, names, TAC_TEMPLATES)
    prompts = encode_texts(tiny_model, [t.format(n) for n in names for t in TAC_TEMPLATES])
    means = prompts.reshape(3, len(TAC_TEMPLATES), -1).mean(axis=1)
    np.testing.assert_allclose(vectors, means / np.linalg.norm(means, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert encode_vocabulary(tiny_model, names, "photo1").shape == (3, 32)


def test_progress_counts_names_and_cancel_stops(tiny_model):
    seen = []
    encode_vocabulary(tiny_model, ["a", "b", "c"], ["{}", "a {}"], batch_size=2, progress=lambda *a: seen.append(a))
    assert seen[-1] == (text_encoding.STAGE, 3, 3)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        encode_texts(tiny_model, PROMPTS, cancel=token)


def test_text_inputs_are_validated(tiny_model):
    assert encode_texts(tiny_model, []).shape == (0, 32)
    with pytest.raises(InvalidInputError, match="single string"):
        encode_texts(tiny_model, "cat")
    with pytest.raises(InvalidInputError, match="non-empty"):
        encode_vocabulary(tiny_model, ["cat", "  "])
    with pytest.raises(InvalidInputError, match="exactly one"):
        encode_vocabulary(tiny_model, ["cat"], ["no placeholder"])
    with pytest.raises(InvalidInputError, match="batch_size"):
        encode_texts(tiny_model, ["cat"], batch_size=0)


# -- tokenising a vocabulary ---------------------------------------------------------------------------------
def test_joined_vocabulary_tokens_equal_the_tokenizer(tiny_model):
    tokenizer = tiny_model.tokenizer
    names = Vocabulary.wordnet().names[::30] + [  # 2,240 WordNet names and the odd ones
        "O.K.", "Ph.D.", "April Fools'", "café", "AT&T", "a <b> tag", "B-52", "o'clock", "'s-Hertogenbosch",
        "two  spaces", "3D", "C++", "x" * 400, "long " * 60, "Ünïcode", "tab\tinside"]
    templates = TAC_TEMPLATES + ("{}", "{}s are here", "a photo of a {}'s part.", "{} .")
    whole = tokenizer([t.format(n) for n in names for t in templates])
    joined = vocabulary_tokens(tokenizer, names, templates)
    assert joined.dtype == whole.dtype and torch.equal(joined, whole)


def test_other_tokenizers_tokenise_whole_prompts():
    calls = []

    class Other:
        def __call__(self, texts, context_length=None):
            calls.append(list(texts))
            return torch.zeros((len(texts), 77), dtype=torch.long)

    tokens = vocabulary_tokens(Other(), ["crack", "stain"], ("a {}.", "art of the {}."))
    assert calls == [["a crack.", "art of the crack.", "a stain.", "art of the stain."]] and tokens.shape == (4, 77)
