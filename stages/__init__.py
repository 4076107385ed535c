"""The llmforge stages: one module per subcommand, each a Config, a run() and a STAGE."""
