"""The index of a running msearch reached through Ray: its store owner actor, with this
process's query models (see :func:`msearch.client.open_index`)."""

from __future__ import annotations

from msearch.client import StoreIndex


def ray_index(settings) -> StoreIndex:
    from pipelines.cluster import connect, disconnect
    from pipelines.owner import OwnerClient, get_owner

    connect(settings)
    try:
        store = OwnerClient(get_owner(settings, create=False))
    except BaseException:
        disconnect()
        raise
    return StoreIndex(settings, store, [disconnect])
