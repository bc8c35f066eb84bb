"""Kafka consumer processes: ``poisonsim consume SCENARIO`` (the learner, :mod:`poisonsim.consumers.learner`)
and ``poisonsim consume --role judge SCENARIO`` (:mod:`poisonsim.consumers.judge`)."""
