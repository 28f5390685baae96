"""Run folders on disk: checkpoints (saved atomically, loaded safely), the JSON files of a run, the folder of a
``gctxseg cv`` run and which trained weights a command finds."""
