"""``gctxseg cv``: the folds of one configuration, the choice among configurations, the race after fold 0 and
the learning-rate probe."""
