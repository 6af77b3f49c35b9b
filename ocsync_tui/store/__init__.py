"""SQLite state: devices (the sync table), folders, schedule, transfers, events."""
