"""The index of a running msearch reached through Ray: its store owner actor, with this
process's query models (see :func:`msearch.client.open_index`)."""

from __future__ import annotations

from msearch.client import StoreIndex


def ray_index(settings) -> StoreIndex:
    from pipelines.cluster import connect, shutdown, stop_local
    from pipelines.owner import OwnerClient, get_owner

    # The owner may have ended since it was found: then this process started Ray and an owner.
    started = connect(settings)
    end = (lambda: stop_local(settings)) if started else shutdown
    try:
        store = OwnerClient(get_owner(settings, create=False))
    except BaseException:
        end()
        raise
    return StoreIndex(settings, store, [end])
