"""The trained head: exact float64 arithmetic, the logistic and Adam heads, evaluation metrics."""
