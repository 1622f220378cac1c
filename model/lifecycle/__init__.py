"""What happens to a model after training: publish, export, verify, gc, the catalog of models."""
