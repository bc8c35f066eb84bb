"""Kafka producer processes: ``poisonsim produce benign|attack SCENARIO`` (see :mod:`poisonsim.producers.process`)."""
