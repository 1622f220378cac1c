"""Base-network features: cache keys for tensors and features, and the chunks that compute them."""
