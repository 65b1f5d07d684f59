"""Lab files: strict models, the bounded YAML loader, and resolution into a topology (addresses, hosts)."""
