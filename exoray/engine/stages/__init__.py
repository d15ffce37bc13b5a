"""Ray Data stage classes (callable classes used with ``map_batches``); no Ray import needed."""
