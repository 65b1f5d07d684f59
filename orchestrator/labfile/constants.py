"""The lab file's constants — roles, LANs, the lab address range, name patterns — apart from the pydantic
models (models.py), so what reads a lab back (state, providers, `testbed down`) needs no pydantic."""

from __future__ import annotations

ROLES = ("admin-server", "blade", "gateway", "target", "sniffer", "injector")
LAN_KINDS = ("management", "admin", "experimental")
# Roles allowed on each LAN (the paper's separation: management is for the admin server and the blades' RMCs).
ALLOWED_ROLES = {
    "management": {"admin-server", "blade"},
    "admin": set(ROLES),
    "experimental": {"blade", "gateway", "target", "sniffer", "injector"},
}
# LANs a host sits on when its entry does not say.
DEFAULT_LANS: dict[str, list[str]] = {
    "admin-server": ["management", "admin"],
    "blade": ["management", "admin", "experimental"],
    "gateway": ["admin", "experimental"],
    "target": ["admin", "experimental"],
    "sniffer": ["admin", "experimental"],
    "injector": ["admin", "experimental"],
}
LAB_RANGE = "198.18.0.0/15"     # RFC 2544 benchmark space: every lab address comes from here, nothing else
DEFAULT_SUBNETS = {"management": "198.18.0.0/24", "admin": "198.18.1.0/24", "experimental": "198.18.8.0/22"}
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,23}$"
HOST_PATTERN = r"^[a-z][a-z0-9-]{0,19}$"
RESERVED_HOST_NAMES = {"switch"}
