"""The evaluator: the only reader of ground truth."""
