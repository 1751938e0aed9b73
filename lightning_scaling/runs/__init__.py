"""Run data (numpy only): validation of N, D and losses, run records and which of them a fit may use, CSV run
tables, and the runs to add when there are too few.
"""
