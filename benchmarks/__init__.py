"""Benchmarks: client CPU per streamed chunk, side by side with other clients and floors.

Run with `python -m benchmarks` (or `make bench`); see README "Performance".
"""
