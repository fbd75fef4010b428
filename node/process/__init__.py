"""The node as a process: start-up and shutdown, the command line, the supervisor, logs."""
