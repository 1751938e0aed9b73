"""The scaling law (numpy and scipy only): its forms, the fitting objective and global search, the fitters,
bootstrap intervals, compute allocation, the isoFLOP cross-check, and runs generated from a known law.
"""
