"""Multi-step workflows: `main` (one method end to end) and `compare` (the study's grid)."""
