"""From a fitted law to a decision (numpy only): the next run's plan and the recommendation, as a dict, a
sentence, a text table and the markdown the MLflow UI shows.
"""
