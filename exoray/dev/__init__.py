"""Developer tools: the synthetic image set with ground truth, and the demo."""
