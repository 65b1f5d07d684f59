"""The libvirt provider: real VMs on isolated libvirt networks, and the guest images they boot."""
