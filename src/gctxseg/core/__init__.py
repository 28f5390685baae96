"""The ground floor: files written atomically, output folders and their lock, bounds on numbers, the device,
seeds and precision. Imports nothing else of gctxseg."""
