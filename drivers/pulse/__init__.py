"""pulse protocol: sans-IO codec and driver."""
