"""Where configs come from: capture from model tests, every master-store dialect, the canonical
config model and the master store (merge, dedup by config_hash)."""
