"""CLI subcommands, one module each (see segdeploy.cli)."""
