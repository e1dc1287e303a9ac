"""`gelombang`, the one command line (`cli`): the service's commands and the simulator's, each
imported only when it runs. It stands above everything else in the repository."""
