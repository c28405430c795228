from msearch.sparse import document_vector, query_vector, tokenize


def test_chinese_unigrams_and_bigrams():
    tokens = tokenize("红色汽车")
    assert {"红", "色", "汽", "车", "红色", "色汽", "汽车"} <= set(tokens)


def test_latin_words_lowercased_without_stopwords():
    assert tokenize("The Budget, and THE plan!") == ["budget", "plan"]


def test_mixed_scripts():
    tokens = tokenize("会议 budget 2026")
    assert "会议" in tokens and "budget" in tokens and "2026" in tokens


def test_document_weights_saturate_and_query_is_binary():
    idx, vals = document_vector("budget budget budget plan")
    assert len(idx) == 2 and len(set(idx)) == 2
    weights = dict(zip(idx, vals))
    qi, qv = query_vector("budget")
    assert qv == [1.0]
    assert weights[qi[0]] > min(vals)  # the repeated term weighs more, but less than 3x
    assert weights[qi[0]] < 3 * min(vals)


def test_empty_text_has_no_terms():
    assert document_vector("  ,,, ") == ([], [])


def test_the_fake_text_model_is_a_signed_bag_of_the_same_tokens():
    """The fake text embedder (what most tests and the plumbing benchmark use) adds, per token,
    +1 or -1 to one dimension, both from the token's hash; repeated words add up."""
    import numpy as np

    from msearch.embed import normalize
    from msearch.embed.fake import FakeEmbedder
    from msearch.sparse import term_id

    texts = ["harbour budget harbour", "红色汽车在雨中", "", "the of", "G1373次高铁 budget"]
    model = FakeEmbedder("text")
    want = np.zeros((len(texts), model.dim), dtype=np.float32)
    for i, text in enumerate(texts):
        for token in tokenize(text) or [""]:
            h = term_id(token)
            want[i, h % model.dim] += 1.0 if (h >> 16) & 1 else -1.0
    got = model.embed_texts(texts)
    assert np.array_equal(got, normalize(want + 1e-3))
    # Shared words bring texts together.
    a, b, c = model.embed_texts(["harbour budget", "budget of the harbour", "红色汽车"])
    assert a @ b > a @ c
