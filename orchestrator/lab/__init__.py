"""A lab once built: its lifecycle (up, down, status), SSH access, programs on hosts, provisioning, the
isolation audit."""
