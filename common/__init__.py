"""Small shared pieces of Stitch: data, buffer, evaluation, logging, checkpoints.

Nothing here contains an algorithm's logic; every paper equation lives in its script.
"""
