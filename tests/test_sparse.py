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
