"""Shared infrastructure: config, errors, atomic files, devices, checkpoints, shards, digests, CLI plumbing."""
