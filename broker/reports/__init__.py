"""Reading finished and running runs: summaries, comparison, expectations and exports."""
