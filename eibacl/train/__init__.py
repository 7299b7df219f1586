"""Training loops: SupCon pretraining, cross-entropy baseline."""
