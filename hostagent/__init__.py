"""The host side of worm-testbed: start, signal, list and wait for long-running processes on a lab host.

Standard library only; installed by provisioning under the host's prefix (like the worm and the throttle)
and run over SSH as `python3 -m hostagent start|stop|status|wait …`, identically on namespace hosts and VMs.
Each service has a record (pid, kernel start time, argv) in <prefix>/run/svc/<name>.json, its output in
<prefix>/log/<name>.log; a service is signalled only if its PID still belongs to the process it started.
"""
