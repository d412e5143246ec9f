"""csafe protocol: sans-IO codec and driver."""
