"""ocsync: peer-to-peer folder sync built on one git repository per folder."""

__version__ = "0.1.0"
