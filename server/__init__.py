"""gRPC onto the engine: processes, servicers, errors, health, reflection, metrics; cli.py is the `placecheck` command."""
