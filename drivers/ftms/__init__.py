"""ftms protocol: sans-IO codec and driver."""
