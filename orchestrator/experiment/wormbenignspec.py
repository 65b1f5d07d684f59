"""A `benign:` block beside the worm (issue 17): a stopping-speed (or baseline) experiment whose infected host
carries the benign workload while the worm runs, so a mechanism's stopping speed is measured with the host in
use, as on the paper's hosts, and its benign cost is measured in the same trial.

```yaml
kind: stopping-speed
rates: [20, 200]                        # the worm's scan rates
benign: {servers: 20, rate: 1, lead_s: 10, duration_s: 25}   # the workload's own rate; the lead before the worm
sweep: {working_set_size: [1, 2, 5, 10]}
```
Checked before anything is built, each problem naming its key (pure; `check` adds to the file's problems).
"""

from __future__ import annotations

WORM_KINDS = ("stopping-speed", "baseline")


def check(spec, problems) -> None:
    """What a benign block needs beside a worm, and what kind: benign refuses of it."""
    b = spec.benign
    if b is None:
        return
    given = b.model_fields_set
    if spec.kind == "benign":
        if "rate" in given:
            problems.add(("benign", "rate"), "kind: benign takes the workload's rates from rates: (one trial "
                                             "each); benign.rate is the workload's rate beside a worm")
        if "lead_s" in given:
            problems.add(("benign", "lead_s"), "kind: benign runs no worm to lead; benign.lead_s is the benign "
                                               "use before the worm in a stopping-speed experiment")
        return
    if spec.kind not in WORM_KINDS:
        problems.add(("benign",), f"benign traffic beside the worm runs in kind: {' or '.join(WORM_KINDS)} "
                                  f"experiments, not yet in kind: {spec.kind}")
        return
    if b.rate is None:
        problems.add(("benign", "rate"), "beside the worm the benign block needs the workload's own rate (new "
                                         "connections per second; rates: are the worm's scan rates)")
    if "protocols" in given:
        problems.add(("benign", "protocols"), "beside the worm the benign traffic is in each trial's protocol "
                                              "(worm.protocols: the mechanism under test is that protocol's); "
                                              "drop benign.protocols")
    if b.trace is None and b.lead_s >= b.duration_s:
        problems.add(("benign", "lead_s"), f"the lead ({b.lead_s:g} s) must be shorter than the session "
                                           f"(benign.duration_s {b.duration_s:g} s): the worm is triggered "
                                           "inside it")
