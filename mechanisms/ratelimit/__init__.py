"""rate-limit: new connections per source in an nftables meter — rules, token-bucket model, CLI, Ansible
role (README.md). No daemon, no event log."""
