"""Research studies as low-priority sidecar jobs: a Redis Stream of study ids read through a
consumer group by the workers (or, with no local pool, by the gateway itself), each study run
in a niced child process. See docs/distributed.md ("Studies")."""
