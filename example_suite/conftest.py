# real-agents/ calls the real model services (keys and the CLIs needed): `pytest example_suite`
# runs only the demo; run it by naming it: `pytest example_suite/real-agents -n 5`.
collect_ignore = ["real-agents"]
