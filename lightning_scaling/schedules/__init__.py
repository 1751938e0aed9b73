"""Pure schedules and formulas (no numpy needed): learning-rate schedules over tokens seen (Power, WSD, cosine),
the cubic sparsity schedule and N_avg, and training FLOPs (6ND plus attention).
"""
