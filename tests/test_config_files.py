"""The deployment files are valid for the tools that read them."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_cluster_yaml_is_a_valid_launcher_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # fills the launcher defaults, then checks the schema
    types = config["available_node_types"]
    assert config["head_node_type"] == "head"
    assert "gpu_worker" in types and types["gpu_worker"]["max_workers"] >= 1
    assert any("scripts/setup.sh" in c for c in config["setup_commands"])


def test_serve_config_names_the_deployments_build_app_makes():
    from serve.app import build_app  # noqa: F401  (the import path in the YAML resolves)

    config = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    (app,) = config["applications"]
    assert app["import_path"] == "serve.app:app_builder"
    names = {d["name"] for d in app["deployments"]}
    from msearch.embed import SPACE_KINDS
    from msearch.settings import Settings

    local = Settings().serve.ingress_models  # loaded by the ingress itself, no deployment
    assert local == ("text",)
    assert names == {f"embed-{space}" for space in SPACE_KINDS if space not in local} | {"search-api"}
    for d in app["deployments"]:
        if d["name"].startswith("embed-"):
            auto = d["autoscaling_config"]
            assert auto["min_replicas"] <= auto["max_replicas"]
            assert d["ray_actor_options"]["num_gpus"] == 0
    assert config["http_options"]["host"] == "127.0.0.1"
