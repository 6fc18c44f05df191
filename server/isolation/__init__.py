"""Isolation of untrusted media: decoding in worker processes under CPU, time and memory limits."""
