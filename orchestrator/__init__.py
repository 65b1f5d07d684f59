"""worm-testbed's control plane: lab specs, providers, access, provisioning, capture, experiments, results."""

__version__ = "0.1.0"
