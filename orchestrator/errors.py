"""Every exception the orchestrator raises on purpose, in one place.

CLI verbs catch `TestbedError` and print its message (no traceback); `exit_code` is what the process returns:
1 a failure, 2 bad input or usage, 3 not found (the table: orchestrator.cli.common.EXIT_CODES).
"""

from __future__ import annotations


class TestbedError(Exception):
    """A failure we anticipated and can explain to the user."""

    __test__ = False  # not a pytest test class despite the name
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nhint: {self.hint}"


class SpecError(TestbedError):
    """A lab or experiment file is invalid. Carries every problem found, each with its key path; the message
    lists the first SHOWN of them."""

    exit_code = 2
    SHOWN = 100

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"{source}: {len(problems):,} problem{'s' if len(problems) != 1 else ''}"]
        lines += [f"  {path}: {reason}" for path, reason in problems[:self.SHOWN]]
        if len(problems) > self.SHOWN:
            lines.append(f"  … and {len(problems) - self.SHOWN:,} more")
        super().__init__("\n".join(lines))


class SpecErrors(SpecError):
    """Several files with problems, e.g. an experiment file and the lab file it names: every one's list
    (`problems` has them all, each file's `errors[i].problems` its own)."""

    def __init__(self, errors: list[SpecError]):
        self.errors = errors
        self.source = errors[0].source
        self.problems = [p for e in errors for p in e.problems]
        TestbedError.__init__(self, "\n".join(e.message for e in errors))


def spec_errors(errors: list[SpecError]) -> SpecError | SpecErrors:
    """One file's SpecError as it is, several files' together."""
    return errors[0] if len(errors) == 1 else SpecErrors(errors)


class UsageError(TestbedError):
    """Bad command-line input."""

    exit_code = 2


class NotRootError(TestbedError):
    exit_code = 1


class UnknownProviderError(TestbedError):
    exit_code = 2


class NotFoundError(TestbedError):
    """No lab, host or run of the name given is known here: the same code for every verb."""

    exit_code = 3


class LabNotFoundError(NotFoundError):
    pass


class HostNotFoundError(NotFoundError):
    pass


class LabExistsError(TestbedError):
    pass


class ImageError(TestbedError):
    """An image recipe is invalid, missing, or its build failed."""


class ProviderError(TestbedError):
    """Building, changing or removing a lab's resources failed."""


class CommandError(TestbedError):
    """A command we ran returned non-zero where success was required."""


class AccessError(TestbedError):
    """A host could not be reached, authenticated, or talked to over the admin LAN."""


class ProvisionError(TestbedError):
    """An Ansible run failed."""


class CaptureError(TestbedError):
    """A packet capture could not be started, proven live, stopped completely, or dropped packets."""


class ExperimentError(TestbedError):
    pass


class ProcessDied(TestbedError):
    """A process a trial depends on died or ended badly (orchestrator.experiment.watch found it): the trial is an error."""

    def __init__(self, deaths):
        self.deaths = list(deaths)
        super().__init__("; ".join(d.reason for d in self.deaths))
