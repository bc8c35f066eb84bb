"""The data path after the source: the merged stream, the world a seed fixes, the learner, deployment."""
