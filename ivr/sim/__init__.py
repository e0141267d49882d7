"""Asterisk's side, simulated: the FastAGI caller, the AMI server, the AudioSocket peer, and the demo built on them.

Only the CLI, the benchmarks and the tests import this package; the product never does."""
