"""What writing the vocabulary every few seconds costs, and the bfloat16 text tower: ``python -m bench.vocab_cache``.

Issue 11 (bug 1): the term cache was written every 2,048 terms, so a cancel lost minutes of CPU work; it is now
written every ``VOCABULARY_WRITE_S`` seconds (on a 2-core CPU, ~20-60 terms a shard) and the small shards are
merged when the encoding ends. The table compares, on the full WordNet's 67,186 terms of 512 floats:

- writing them in shards of 32 / 128 / 512 terms (each an fsynced ``.npy`` and keys file) against 2,048-term
  shards (the old writer): the time a shard write adds;
- opening a store of those shards (what every run and the vocabulary page do) against one compacted shard;
- compacting the small shards into one;
- the text tower of ViT-B-32 (random weights) in fp32 against the bfloat16 copy used on CPUs with AMX, with the
  largest difference of a term's vector and the smallest cosine between the two (``--no-model`` skips it).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from tac_core.embedding.cache import VectorStore

DIM = 512


def _timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def cache_rows(n_terms: int, shard_sizes: list[int]) -> list[tuple[str, float, float]]:
    """(case, seconds, baseline seconds) for writing, opening and compacting a store of ``n_terms`` terms."""
    vectors = np.random.default_rng(0).standard_normal((n_terms, DIM)).astype(np.float32)
    keys = [f"term {i}" for i in range(n_terms)]
    rows, stores = [], {}
    with tempfile.TemporaryDirectory() as root:
        for size in [2048, *shard_sizes]:
            folder = Path(root) / f"shards-{size}"
            store = VectorStore(folder, DIM)
            seconds = _timed(lambda: [store.put_many(keys[s:s + size], vectors[s:s + size])
                                      for s in range(0, n_terms, size)])
            stores[size] = (folder, seconds)
        base_folder, base_write = stores[2048]
        base_open = _timed(lambda: VectorStore(base_folder, DIM))
        for size in shard_sizes:
            folder, seconds = stores[size]
            n_shards = -(-n_terms // size)
            rows.append((f"write {n_terms:,} terms in {n_shards:,} shards of {size}", seconds, base_write))
            rows.append((f"open a store of {n_shards:,} shards of {size}", _timed(lambda: VectorStore(folder, DIM)),
                         base_open))
            store = VectorStore(folder, DIM)
            rows.append((f"compact {n_shards:,} shards of {size} into one", _timed(store.compact), base_write))
            rows.append(("open it compacted (1 shard)", _timed(lambda: VectorStore(folder, DIM)), base_open))
    return rows


def precision_rows(n_terms: int, templates: str) -> tuple[list[tuple[str, float, float]], str]:
    """fp32 and bf16 text towers of ViT-B-32 on ``n_terms`` WordNet terms, and their difference."""
    from tac_core.devices import cpu_has_amx
    from tac_core.embedding.models import ModelSpec, load_model
    from tac_core.embedding.text_encoding import encode_vocabulary
    from tac_core.inputs.vocabulary import Vocabulary

    names = Vocabulary.wordnet(categories=["noun.artifact"]).names[:n_terms]
    loaded = load_model(ModelSpec("ViT-B-32", "none"), "cpu")
    for precision in ("fp32", "bf16"):  # warm-up (the bf16 copy is made once)
        encode_vocabulary(loaded, names[:8], templates, precision=precision)
    out = {}
    seconds = {p: _timed(lambda p=p: out.__setitem__(p, encode_vocabulary(loaded, names, templates, precision=p)))
               for p in ("fp32", "bf16")}
    difference = np.abs(out["fp32"] - out["bf16"]).max()
    cosine = (out["fp32"] * out["bf16"]).sum(axis=1).min()
    note = (f"bf16 vs fp32 on {n_terms} terms ({templates}): max |difference| {difference:.1e}, min cosine "
            f"{cosine:.6f}; AMX: {cpu_has_amx()}")
    return [(f"text tower bf16, {n_terms} terms ({templates})", seconds["bf16"], seconds["fp32"])], note


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terms", type=int, default=67_186, help="terms in the store (default: all of WordNet)")
    parser.add_argument("--shards", default="32,128,512", help="shard sizes to compare with 2,048")
    parser.add_argument("--model-terms", type=int, default=400)
    parser.add_argument("--no-model", action="store_true", help="skip the text tower rows")
    args = parser.parse_args(argv)
    rows = cache_rows(args.terms, [int(s) for s in args.shards.split(",")])
    note = ""
    if not args.no_model:
        model_rows, note = precision_rows(args.model_terms, "tac3")
        rows += model_rows
    print("| case | seconds | baseline s | ratio (baseline / case) |\n|---|---|---|---|")
    for case, seconds, baseline in rows:
        print(f"| {case} | {seconds:.3f} | {baseline:.3f} | {baseline / seconds:.2f}x |")
    print("baselines: 2,048-term shards (writes, compaction), their store (opening), the fp32 tower (bf16)")
    if note:
        print(note)


if __name__ == "__main__":
    main()
