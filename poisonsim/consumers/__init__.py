"""Kafka consumer processes: ``poisonsim consume SCENARIO`` (the learner, :mod:`poisonsim.consumers.learner`)
and ``poisonsim consume --role detector SCENARIO`` (:mod:`poisonsim.consumers.detector`)."""
