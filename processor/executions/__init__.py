"""The executions read side: history and status, from the compacted `trigger-executions`.

The API and the console keep a live view of it (`history.ExecutionsView`); the CLI reads
it once (`history.read_latest`). Both count a trigger's failures with the dispatcher's own
rule, so what they say about the circuit breaker is what the dispatcher does."""
