"""The real model path: tiny random CLIP and the packaged MiniLM, loaded through infinity-emb."""

import numpy as np
import pytest

from conftest import index_direct, make_settings, write_image
from msearch.embed import available_roles, build_embedder
from msearch.errors import ModelUnavailable
from msearch.library import Library
from msearch.media.image import prepare_for
from msearch.search import SearchService


@pytest.fixture(scope="module")
def clip_settings(tmp_path_factory, tiny_clip):
    return make_settings(tmp_path_factory.mktemp("clipdata"), models={"clip": tiny_clip, "text": "fake"})


@pytest.fixture(scope="module")
def clip(clip_settings):
    embedder = build_embedder("clip", clip_settings)
    yield embedder
    embedder.close()


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    embedder = build_embedder("text", make_settings(tmp_path_factory.mktemp("textdata")))
    yield embedder
    embedder.close()


def test_clip_reads_past_twenty_tokens(clip):
    # The checkpoint's config has no max_length (like hub CLIP); msearch sets CLIP's real context.
    assert clip.text_max_length() == 77
    a, b = clip.embed_texts(["x" * 40 + " red car", "x" * 40 + " blue sky"])
    assert float(a @ b) < 0.9999


def test_stored_image_vector_is_the_models_own_output(clip, clip_settings, tmp_path, tiny_clip):
    import torch
    from transformers import AutoProcessor, CLIPModel

    paths = [write_image(tmp_path / "imgs" / f"{i}.jpg", seed=i, size=(120, 90)) for i in range(5)]
    lib = Library(clip_settings)
    try:
        report = index_direct(lib, clip_settings, [tmp_path / "imgs"], {"clip": clip})
        assert len(report["indexed"]) == 5
        model, processor = CLIPModel.from_pretrained(tiny_clip).eval(), AutoProcessor.from_pretrained(tiny_clip)
        for path in paths:
            hit = lib.show(str(path))
            (stored_id,) = [h.id for h in lib.vectors.scroll("clip") if h.payload["content_hash"] == hit["content_hash"]]
            stored = np.asarray(lib.vectors.vectors("clip", [stored_id])[stored_id])
            pil = prepare_for(path.read_bytes(), clip_settings).to_pil()
            with torch.no_grad():
                direct = model.get_image_features(**processor(images=pil, return_tensors="pt"))[0].numpy()
            direct /= np.linalg.norm(direct)
            assert float(stored @ direct) >= 0.9999

        # Ranking equals brute-force cosine over the stored vectors.
        service = SearchService({"clip": clip}, lib, clip_settings)
        query = write_image(tmp_path / "q.png", seed=2, size=(100, 100))
        results = service.search_image(query.read_bytes(), top_k=5)
        q = clip.embed_images([prepare_for(query.read_bytes(), clip_settings).to_pil()])[0]
        by_hash = {lib.show(str(p))["content_hash"]: str(p) for p in paths}
        stored = {h.payload["content_hash"]: h.id for h in lib.vectors.scroll("clip")}
        vectors = lib.vectors.vectors("clip", list(stored.values()))
        brute = sorted(by_hash, key=lambda h: -float(np.dot(vectors[stored[h]], q)))
        assert [r["path"] for r in results] == [by_hash[h] for h in brute]
        assert results[0]["path"] == str(paths[2])
    finally:
        lib.close()


CORPUS = {
    "finance.txt": "The finance committee approved next year's spending plan and cut the travel allowance.",
    "garden.txt": "Tomatoes need full sun, rich soil and regular watering during the summer months.",
    "cooking.txt": "Simmer the onions slowly in butter until they turn golden and sweet.",
    "astronomy.txt": "The telescope revealed four moons circling the giant planet Jupiter.",
    "football.txt": "The striker scored twice in the second half and the home side won the match.",
    "health.txt": "Regular exercise and enough sleep lower the risk of heart disease.",
    "zh_rain.txt": "红色汽车在雨中缓缓行驶，司机打开了雨刷。",
}
PARAPHRASES = {
    "how much money the company will spend": "finance.txt",
    "growing vegetables in a sunny backyard": "garden.txt",
    "a recipe with caramelised onion": "cooking.txt",
    "observing satellites of a gas giant": "astronomy.txt",
    "a soccer game result": "football.txt",
    "staying fit keeps your heart healthy": "health.txt",
}


def test_paraphrased_queries_find_the_right_document(minilm, tmp_path):
    settings = make_settings(tmp_path / "data", models={"clip": "fake", "text": minilm.model_id})
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in CORPUS.items():
        (docs / name).write_text(text, encoding="gbk" if name.startswith("zh") else "utf-8")
    lib = Library(settings)
    try:
        index_direct(lib, settings, [docs], {"text": minilm})
        service = SearchService({"text": minilm}, lib, settings)
        for query, expected in PARAPHRASES.items():
            results = service.search_text(query, top_k=3)
            assert results[0]["path"].endswith(expected), (query, [r["path"] for r in results])
        # MiniLM is English-only; the keyword index still finds Chinese words.
        results = service.search_text("汽车 雨刷", top_k=3)
        assert results[0]["path"].endswith("zh_rain.txt")
        assert results[0]["text"].startswith("红色汽车")
    finally:
        lib.close()


def test_missing_weights_are_reported_clearly(tmp_path):
    settings = make_settings(tmp_path / "d", models={
        "clip": "openai/clip-vit-base-patch32", "text": str(tmp_path / "nope"),
        "clap": "laion/clap-htsat-unfused", "whisper": "base", "colpali": "michaelfeil/colqwen2-v0.1",
        "ocr": "rapidocr"})
    ok, missing = available_roles(settings)
    assert ok == {"whisper": "base", "ocr": "rapidocr"}  # found in their packages, without the hub
    assert "MSEARCH_MODELS__COLPALI" in missing["colpali"]
    assert "MSEARCH_MODELS__CLIP" in missing["clip"] and "openai/clip-vit-base-patch32" in missing["clip"]
    assert "MSEARCH_MODELS__CLAP" in missing["clap"] and "laion/clap-htsat-unfused" in missing["clap"]
    assert "no such folder" in missing["text"] and "MSEARCH_MODELS__TEXT" in missing["text"]
    with pytest.raises(ModelUnavailable, match="MSEARCH_MODELS__CLIP"):
        build_embedder("clip", settings)


def test_a_folder_that_is_not_a_model_is_refused(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{}")
    settings = make_settings(tmp_path / "d", models={"clip": str(tmp_path / "junk")})
    with pytest.raises(ModelUnavailable, match="cannot load it"):
        build_embedder("clip", settings)


def test_streams_default_to_two_on_a_cpu_with_two_threads(tmp_path, monkeypatch):
    from msearch.embed.infinity import model_streams

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert model_streams(make_settings(tmp_path), "cpu") == 2
    assert model_streams(make_settings(tmp_path, index={"embed_threads": 1}), "cpu") == 1
    assert model_streams(make_settings(tmp_path), "cuda") == 1
    assert model_streams(make_settings(tmp_path, index={"embed_streams": 3}), "cuda") == 3
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert model_streams(make_settings(tmp_path), "cpu") == 1


MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # infinity's text path (the default text model is not)


def _forwards_by_thread(embedder) -> list[str]:
    """Wrap the model's forward pass to record the thread of each call."""
    import threading

    (model,) = embedder._worker_models()
    forward, threads = model.encode_core, []

    def encode_core(features):
        threads.append(threading.current_thread().name)
        return forward(features)

    model.encode_core = encode_core
    return threads


@pytest.mark.parametrize("role", ["clip", "text"])
def test_two_streams_share_one_model_and_give_its_vectors(role, tmp_path, tiny_clip):
    """Two streams run forward passes of the one loaded model side by side, and every input gets
    the vector that one stream gives it (images, and texts of unequal length batched apart)."""
    def build(streams: int):
        return build_embedder(role, make_settings(tmp_path / "d", models={"clip": tiny_clip, "text": MINILM},
                                                  index={"embed_streams": streams, "embed_batch_size": 8}))

    one, two = build(1), build(2)
    settings = make_settings(tmp_path / "d", models={"clip": tiny_clip, "text": MINILM})
    try:
        assert one.streams == 1 and len(one._array.async_engine_array[role]._batch_handler.model_worker) == 1
        assert two.streams == 2 and len(two._worker_models()) == 1
        handler = two._array.async_engine_array[role]._batch_handler
        assert len(handler.model_worker) == 2 and handler.max_batch_size == 4
        threads = _forwards_by_thread(two)
        if role == "clip":
            pictures = [prepare_for(write_image(tmp_path / f"{i}.jpg", seed=i, size=(80, 60)).read_bytes(),
                                    settings).to_pil() for i in range(24)]
            got, want = two.embed_images(pictures), one.embed_images(pictures)
        else:
            texts = [" ".join(["word"] * (1 + 7 * i)) + f" number {i}" for i in range(24)]
            got, want = two.embed_texts(texts), one.embed_texts(texts)
        assert len(threads) == 6 and len(set(threads)) == 2  # six batches of four, on both streams
        np.testing.assert_allclose(got, want, atol=2e-5)
    finally:
        one.close()
        two.close()


def test_an_embedding_actor_shares_its_threads_among_the_streams(tmp_path):
    import torch

    from pipelines.stages import torch_threads

    before = torch.get_num_threads()
    try:
        torch_threads(make_settings(tmp_path, device="cpu", index={"embed_threads": 4, "embed_streams": 2}))
        assert torch.get_num_threads() == 2
        torch_threads(make_settings(tmp_path, device="cpu", index={"embed_threads": 4, "embed_streams": 1}))
        assert torch.get_num_threads() == 4
        torch_threads(make_settings(tmp_path, device="cpu", index={"embed_threads": 1}))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_an_embedding_actor_takes_a_call_per_stream(tmp_path, tiny_clip):
    """While one call's batches run, the next call's wait in the model's queue (a call at a time
    left the streams idle between calls); the free models and a GPU take one call at a time."""
    from pipelines.kept import kept_options
    from pipelines.stages import embed_calls_at_once, index_stages

    cpus = {"hash": 0.5, "decode": 0.5, "embed": 1.0, "whisper": 1.0, "write": 0.5}
    torch_cpu = make_settings(tmp_path, device="cpu", models={"clip": tiny_clip, "text": "fake"},
                              index={"embed_threads": 2})
    assert embed_calls_at_once(torch_cpu, ["clip", "text"]) == 2
    assert kept_options(torch_cpu, cpus, roles=["clip", "text"]) == {"num_cpus": 1.0, "max_concurrency": 2}
    (embed,) = [s for s in index_stages(torch_cpu, "run", {}, {}, ["clip", "text"], False, cpus) if s.name == "embed"]
    assert embed.calls == 2
    assert embed_calls_at_once(torch_cpu, ["text"]) == 1  # the fake text model
    one_thread = make_settings(tmp_path, device="cpu", models={"clip": tiny_clip}, index={"embed_threads": 1})
    assert kept_options(one_thread, cpus, roles=["clip"]) == {"num_cpus": 1.0}
    gpu = make_settings(tmp_path, models={"clip": tiny_clip}, index={"embed_num_gpus": 1, "embed_threads": 2})
    assert kept_options(gpu, cpus, roles=["clip"]) == {"num_cpus": 1.0, "num_gpus": 1}
