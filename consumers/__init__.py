"""Kafka consumer processes: ``poisonsim consume SCENARIO`` (the learner, :mod:`consumers.learner`)
and ``poisonsim consume --role detector SCENARIO`` (:mod:`consumers.detector`)."""
