"""Ray glue for indexing: the Ray Data pipeline and the store-owner actor."""

import os

# Read by Ray at import time, so set here, before any submodule imports ray.
# Without the first, Ray swaps 127.0.0.1 for the machine's outward address and binds its
# listeners to every interface; the second lets drivers and the job CLI use the token
# that a local Ray writes to ~/.ray/auth_token.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")
