"""A small DistributedDataParallel training project that traincheck has nothing to say about."""
