"""Analysis of a trial: a fast pcap/pcapng reader in chunks (`pcap`), one streamed pass keeping what the analysis
needs (`scan`), connection attempts on the wire (`attempts`), tolerant worm/throttle log readers (`logs`),
stopping-speed metrics and cross-checks (`metrics`) and one trial's analysis from its files (`trial`); the
`testbed analyse` command is orchestrator/cli/analyse.py. See docs/analysis.md.
"""

from .attempts import Attempts, SourceTimeline, build_attempts, extract_attempts, source_timelines
from .errors import CaptureReadError, LogReadError
from .figures import Finding, MetricsResult, MetricsSettings, SourceMetrics
from .logs import (
                   ThrottleLog,
                   WormLog,
                   merge_worm_logs,
                   parse_throttle_log,
                   parse_worm_log,
                   read_throttle_log,
                   read_worm_log,
)
from .metrics import compute_metrics
from .pcap import CaptureReader, Packets, read_capture
from .scan import CaptureScan, CaptureSummary, scan_capture
from .trial import TrialAnalysis, analyse_trial

__all__ = [
    "Attempts", "CaptureReadError", "CaptureReader", "CaptureScan", "CaptureSummary", "Finding", "LogReadError", "MetricsResult", "MetricsSettings", "Packets",
    "SourceMetrics", "SourceTimeline", "ThrottleLog", "TrialAnalysis", "WormLog", "analyse_trial",
    "build_attempts", "compute_metrics", "extract_attempts", "merge_worm_logs", "parse_throttle_log",
    "parse_worm_log", "read_capture", "read_throttle_log", "read_worm_log", "scan_capture", "source_timelines",
]
