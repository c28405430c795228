"""Ray glue for indexing: the Ray Data pipeline and the store-owner actor."""

from msearch.settings import ray_environment

ray_environment()  # before any submodule imports ray
