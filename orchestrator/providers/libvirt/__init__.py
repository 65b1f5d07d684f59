"""The libvirt provider: real VMs on isolated libvirt networks, and the guest images they boot."""

DEFAULT_IMAGE = "debian"      # the guest image a libvirt host boots unless its lab file names another
