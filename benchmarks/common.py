"""What the benchmark scripts share: where and when a figure was taken, and how it is reported."""

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def run_info() -> dict:
    return {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
            "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}


def time_batches(embed, items: list, batch: int) -> float:
    """Seconds to ``embed`` ``items`` ``batch`` at a time, after one batch to warm up."""
    embed(items[:batch])
    start = time.perf_counter()
    for i in range(0, len(items), batch):
        embed(items[i : i + batch])
    return time.perf_counter() - start


def report(out: dict, rows: list[tuple[str, object]], path: Path | None) -> None:
    """A table of the headline figures, then everything as JSON (also written to ``path``)."""
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}} {'value':>10}")
    for name, value in rows:
        print(f"{name:<{width}} {value:>10}")
    print(json.dumps(out, indent=1, ensure_ascii=False))
    if path:
        path.write_text(json.dumps(out, indent=1, ensure_ascii=False))


def wait_for_health(url: str, server, timeout: float = 300) -> float:
    """Poll ``url``/health until it answers 200; returns the seconds it took. Exits if the
    server process ends first or the time runs out."""
    import httpx

    start = time.monotonic()
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() - start > timeout:
            raise SystemExit("msearch serve did not come up")
        time.sleep(0.5)


def msearch_env(data_dir: Path, models: dict[str, str] | None = None, **settings: str) -> dict:
    """The environment for an msearch command of a benchmark: none of the caller's MSEARCH_
    settings but the index ones (MSEARCH_INDEX__*, for sweeps), this data dir, no dashboard,
    these models (role -> spec) and other settings (MSEARCH_<NAME>)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSEARCH_") or k.startswith("MSEARCH_INDEX__")}
    env.update({f"MSEARCH_MODELS__{role.upper()}": spec for role, spec in (models or {}).items()})
    env.update({f"MSEARCH_{name.upper()}": value for name, value in settings.items()})
    env.update(MSEARCH_DATA_DIR=str(data_dir), MSEARCH_DASHBOARD="false")
    return env


def start_serve(env: dict, port: int, log_path: Path) -> tuple[str, subprocess.Popen]:
    """`msearch serve` on 127.0.0.1:``port``, its output in ``log_path`` (read it when it does not
    come up); returns its URL and process once /health answers."""
    env = {**env, "MSEARCH_PORT": str(port)}
    server = subprocess.Popen([Path(sys.executable).parent / "msearch", "serve"], env=env,
                              stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_for_health(url, server)
    return url, server


def machine_cpu() -> tuple[float, float]:
    """The machine's busy and idle CPU seconds since boot (all cores, from /proc/stat)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / CpuByRole.TICK, idle / CpuByRole.TICK


class CpuByRole:
    """CPU seconds of a process and all its descendants, by role (from each process's title:
    Ray names its workers after the task or actor they run)."""

    ROLES = (("store owner", ("StoreOwner", "msearch-owner")),
             ("embedding actor", ("EmbedUnits", "EmbedService", "Transcribe")),
             ("task workers (hash, decode, write)", ("MapBatches(", "Write", "ReadItems")),
             ("Ray Data's actors", ("_StatsActor", "AutoscalingCoordinator", "ActorLocationTracker")))
    RAY = "Ray (GCS, raylet, dashboard, agents, idle workers)"
    TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self, root: int):
        self.root = root
        self.cpu: dict[int, float] = {}
        self.system: dict[int, float] = {}
        self.faults: dict[int, int] = {}  # minor page faults
        self.role: dict[int, str] = {}

    def sample(self) -> None:
        parents, stats = {}, {}  # stats: pid -> (CPU s, system CPU s, minor faults)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(fields[1])
            stats[int(entry)] = ((int(fields[11]) + int(fields[12])) / self.TICK, int(fields[12]) / self.TICK,
                                 int(fields[7]))
        for pid, (seconds, system, faults) in stats.items():
            up = pid
            while up in parents and up != self.root:
                up = parents[up]
            if up != self.root:
                continue
            self.cpu[pid], self.system[pid], self.faults[pid] = seconds, system, faults
            if self.role.get(pid, self.RAY) == self.RAY:
                self.role[pid] = self._role(pid)

    def _role(self, pid: int) -> str:
        if pid == self.root:
            return "driver (msearch index)"
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            title = ""  # gone, or changing its title: read again at the next sample
        for role, marks in self.ROLES:
            if any(m in title for m in marks):
                return role
        return self.RAY

    def totals(self, per_pid: dict[int, float]) -> dict[str, float]:
        """``per_pid`` (one of the sampled measures) summed by role, largest first."""
        out: dict[str, float] = {}
        for pid, value in per_pid.items():
            role = self.role[pid]
            out[role] = round(out.get(role, 0.0) + value, 2)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))
