"""Few-shot and label-free scoring from CLIP patch features.

bank.py     reference banks: patch features per layer, greedy coreset subsampling (PatchCore)
scoring.py  1 - max cosine to the bank per patch, averaged over layers; tile maps; fusion (WinCLIP+)
pool.py     rolling normal pool of recent frames, MuSc-style robust aggregate
store.py    banks and pool in Redis as raw arrays (dtype + shape, never pickle)
"""
