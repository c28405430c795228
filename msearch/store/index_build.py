"""Build the HNSW index of one embedded shard in a process of its own.

    python -m msearch.store.index_build SHARD_DIR [--niceness N]

qdrant-edge keeps Python's interpreter lock while it builds, so a build inside the store owner
stops every other thread of that process — searches too — for as long as it takes. The owner
builds a copy of the shard here instead and swaps it in (see ``EdgeStore.optimize``). With
``--niceness`` it first lowers its CPU priority to N (the indexing niceness): the build's threads
take every core, and searches meanwhile should get them first. Prints ``optimized`` or
``unchanged``.
"""

import argparse
import os
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m msearch.store.index_build")
    parser.add_argument("shard")
    parser.add_argument("--niceness", type=int, default=0)
    args = parser.parse_args(argv)
    if args.niceness > os.getpriority(os.PRIO_PROCESS, 0):  # lowering needs no privilege; raising would
        os.setpriority(os.PRIO_PROCESS, 0, args.niceness)

    import qdrant_edge as E

    shard = E.EdgeShard.load(args.shard)
    try:
        changed = shard.optimize()
        shard.flush()
    finally:
        shard.close()
    print("optimized" if changed else "unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
