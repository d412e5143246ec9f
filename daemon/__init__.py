"""The runtime: controller, session timer, history, config, CLI. Imports drivers, safety, sims."""
