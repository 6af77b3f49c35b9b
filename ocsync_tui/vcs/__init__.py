"""Folder repositories: one git repository per shared folder, one commit per file change."""
