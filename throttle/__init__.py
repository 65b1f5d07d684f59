"""The reference virus throttle: a pure algorithm core, a model of it, and an NFQUEUE daemon.

`throttle.core` and `throttle.model` use the standard library only; `throttle.daemon` adds NetfilterQueue.
Nothing here imports from the orchestrator, so the package installs on any guest with Python 3.
"""

from .core import (
    ConfigError,
    Decision,
    Event,
    Request,
    Throttle,
    ThrottleConfig,
    ThrottleError,
)

__all__ = ["ConfigError", "Decision", "Event", "Request", "Throttle", "ThrottleConfig", "ThrottleError"]
