"""How well the final-loss law predicts runs it has not seen (numpy and scipy only): forward-chaining folds over
compute, the backtest and the choice between law forms, and prediction intervals calibrated on held-out runs.
"""
