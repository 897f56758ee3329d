"""Backbones, their weight files and the input normalisation the weights expect."""
