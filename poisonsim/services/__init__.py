"""What the Kafka processes share: flags and environment, logging and signals, Prometheus metrics, checkpoints."""
