"""What names a model: canonical JSON and the code version, views, the recipe, the manifest, tensor files."""
