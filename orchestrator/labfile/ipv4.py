"""IPv4 addresses and CIDR networks as lab and experiment files write them: the JSON Schema patterns and the
loader's notation check, which accept the same strings.

An address is a dotted quad whose octets are 0–255 in decimal without leading zeros (what
`ipaddress.IPv4Address` accepts). A CIDR is such an address, '/', and a prefix length 0–32 without leading
zeros. `ipaddress.ip_network` also takes a bare address (as a /32), a netmask ('/255.255.255.0'), a host mask
and '/024'; a file may not: `cidr_notation_problem` says so, and the schema's pattern refuses them alike.

The patterns are written for both regex dialects a JSON Schema validator may use: ECMA-262 (editors,
check-jsonschema) and Python's `re.search` (jsonschema). Digits are `[0-9]`, not `\\d` (which in Python
matches any Unicode digit), and the end is `$(?!\\n)`, since Python's `$` also matches before a final newline.
"""

from __future__ import annotations

import ipaddress

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_PREFIX = r"(?:3[0-2]|[12][0-9]|[0-9])"
_ADDRESS = rf"(?:{_OCTET}\.){{3}}{_OCTET}"
_END = r"$(?!\n)"

IPV4_PATTERN = rf"^{_ADDRESS}{_END}"
CIDR_PATTERN = rf"^{_ADDRESS}/{_PREFIX}{_END}"


def cidr_notation_problem(text: str) -> str | None:
    """None when `text` is ADDRESS/PREFIX as above (exactly when CIDR_PATTERN matches it); else what is wrong,
    in a few words."""
    address, slash, prefix = text.partition("/")
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        return "not ADDRESS/PREFIX (e.g. 198.18.1.0/24)"
    if not slash:
        return f"a bare address, not ADDRESS/PREFIX; for one address write {address}/32"
    if not (prefix.isascii() and prefix.isdigit()):
        return "the prefix length is not a number 0–32 (a netmask like /255.255.255.0 is not CIDR notation)"
    if prefix != str(int(prefix)):
        return f"the prefix length '{prefix}' has a leading zero"
    if int(prefix) > 32:
        return f"the prefix length {prefix} is more than 32"
    return None
