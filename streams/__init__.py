"""riskmon's adapters: CLI, replay, Faust app, topics, metrics. They call models/."""
