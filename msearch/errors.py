"""Domain errors. ``serve/`` maps them to HTTP codes, the CLI to messages and exit codes."""


class MsearchError(Exception):
    """Base of every error msearch raises on purpose."""


class ConfigError(MsearchError):
    """A setting is wrong or contradicts what the data dir was built with."""


class DataDirBusy(MsearchError):
    """Another process owns this data dir's stores."""


class NotRunning(MsearchError):
    """No msearch owner is running where one was required."""


class ModelUnavailable(MsearchError):
    """A model's weights cannot be loaded (not local, not cached, no hub)."""

    def __init__(self, role: str, model: str, setting: str, reason: str):
        self.role, self.model, self.setting, self.reason = role, model, setting, reason
        if model == "none":
            super().__init__(f"the {role} model is switched off ({setting}=none).")
            return
        super().__init__(
            f"{role} model {model!r} is unavailable ({reason}). "
            f"Set {setting} to a local folder holding its weights."
        )


class MissingDependency(MsearchError):
    """An optional package is not installed."""


class UnsupportedQuery(MsearchError):
    """The query asks for something no configured model can answer."""


class BadInput(MsearchError):
    """A file or upload cannot be read as what it claims to be."""


class NotFound(MsearchError):
    """No such file, unit or thumbnail in the index."""


class Unauthorized(MsearchError):
    """A request that changes the index came without the data dir's API token."""


class Forbidden(MsearchError):
    """A path outside the folders msearch is configured to serve."""


class Conflict(MsearchError):
    """What is asked for no longer matches the index (a file changed since it was indexed)."""


class DiskFull(MsearchError):
    """A store could not write: the disk holding it is full."""
