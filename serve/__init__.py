"""Ray Serve glue: the HTTP search application."""

import pipelines  # noqa: F401  (sets Ray's loopback and auth environment before ray is imported)
