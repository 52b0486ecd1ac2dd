"""riskmon's tools: bench, soak, evaluate and the HTML report. They use the core and the adapters; nothing
in the worker's path imports them."""
