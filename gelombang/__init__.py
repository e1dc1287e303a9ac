"""Gelombang's edges, outside the service's folder: the one command line (`cli`, which
registers the service's commands and the simulator's), the library an origin imports to check
admission tokens (`origin_guard`), and the harness that runs the project's processes for the
demo, the benchmarks and the tests (`subprocesses`)."""
