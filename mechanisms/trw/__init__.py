"""trw: Threshold Random Walk (Jung, Paxson, Berger & Balakrishnan 2004) — core, model, NFQUEUE daemon,
rules, CLI and Ansible role (README.md). Importing this package imports nothing heavy."""
