"""Protocol cores (sans-I/O) and their trio drivers: wire formats, crypto, transport, discovery."""
