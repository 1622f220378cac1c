"""Labelling images with a stored model: the predictor and batch labelling of a CSV."""
