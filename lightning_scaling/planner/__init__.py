"""What to run next (numpy only): from the runs logged so far to a decision. The next run sized by the fitted law
with calibrated intervals, the next stage of a sweep (a c-optimal design, the rollout, the family's
architectures, learning-rate and batch-size priors), the predictions and backtests a user asks for, and the
report renderers (a sentence, a text table, the markdown the MLflow UI shows).
"""
