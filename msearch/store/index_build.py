"""Build the HNSW index of one embedded shard in a process of its own.

    python -m msearch.store.index_build SHARD_DIR

qdrant-edge keeps Python's interpreter lock while it builds, so a build inside the store owner
stops every other thread of that process — searches too — for as long as it takes. The owner
builds a copy of the shard here instead and swaps it in (see ``EdgeStore.optimize``). Prints
``optimized`` or ``unchanged``.
"""

import sys


def main(argv: list[str]) -> int:
    import qdrant_edge as E

    shard = E.EdgeShard.load(argv[0])
    try:
        changed = shard.optimize()
        shard.flush()
    finally:
        shard.close()
    print("optimized" if changed else "unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
