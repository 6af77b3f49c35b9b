"""The daemon: one trio program that owns the store, the folders, the UDP endpoint and the control API."""
