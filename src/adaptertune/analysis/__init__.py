"""Analysis: the rank elbow, rank advice, feature drift and the toy experiment (imported per module)."""
