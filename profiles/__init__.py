"""Shipped device profiles (data package): one folder per device + backend + threads."""
