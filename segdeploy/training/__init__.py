"""Training the accuracy fixtures on the CPU (imports models, datasets and the core; never export or runtimes)."""
