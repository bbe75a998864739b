"""Fleet tracing's control plane: trace jobs in Redis (jobs.py), merging their results into the
master store once per trace uid (pull.py), and what each model's traces gave (status.py)."""
