"""Structural pruning with torch-pruning, in small pieces used by the prune step:

  shift.py       TSM's temporal shift made prunable (per-channel directions that follow pruning)
  importance.py  the importance criteria of params["prune"]["importance"] and Taylor's gradients
  structure.py   pruning a model, recording what was removed, and replaying it on a fresh model
  costs.py       parameters, FLOPs and latency before and after
"""
