"""A sentence's translation must not depend on the other sentences of its batch — for every engine and
precision. A server that batches several users' requests together relies on it: one user's text must never
change another user's translation. onnxruntime's dynamic int8 (one activation scale per tensor) broke it;
the row-wise int8 scheme (mtedge/convert/rowwise_int8.py) is what makes the ONNX int8 rows hold."""

from __future__ import annotations

import random

import pytest

from tests.factories import FAMILIES, dev_pairs, templated_pairs

pytest.importorskip("onnxruntime")

# not int8_latency and int4: MatMulNBits rounds a row's sums by the rows in the call (~1 ulp), so the export
# records them as not batch-invariant and the server does not merge requests on them (tests/test_rowwise_int8.py)
CONFIGS = [("onnx", "fp32"), ("onnx", "int8"), ("ct2", "float32"), ("ct2", "int8")]
# held-out sentences of the fixtures' domain, plus shorter and longer neighbours (padding varies a lot)
SENTENCES = [s for s, _ in dev_pairs(40)] + [s for s, _ in templated_pairs(200, seed=11)][:160]


def _in_batches(translator, texts, size, beam):
    out = []
    for start in range(0, len(texts), size):
        out.extend(r.text for r in translator.translate(texts[start:start + size], beam_size=beam))
    return out


@pytest.mark.parametrize("engine, precision", CONFIGS)
@pytest.mark.parametrize("family", FAMILIES)
def test_translation_is_the_same_alone_and_in_shuffled_batches(tiny_unvalidated_bundles, family, engine, precision):
    from mtedge import Translator

    bundle = tiny_unvalidated_bundles(family)
    with Translator(bundle, engine=engine, precision=precision, threads=1) as translator:
        for beam, texts in ((1, SENTENCES), (4, SENTENCES[:48])):
            alone = {text: translator.translate([text], beam_size=beam)[0].text for text in texts}
            for seed, size in ((1, 7), (2, 32)):
                shuffled = list(texts)
                random.Random(seed).shuffle(shuffled)
                batched = _in_batches(translator, shuffled, size, beam)
                differ = [(t, alone[t], b) for t, b in zip(shuffled, batched) if alone[t] != b]
                assert not differ, (f"{family} {engine}/{precision} beam {beam}: {len(differ)}/{len(texts)} "
                                    f"sentences changed with their batch (batch {size}), e.g. {differ[0]}")
