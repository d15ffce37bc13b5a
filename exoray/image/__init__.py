"""Images: the manifest scan and ids, the one decode function, cheap features, duplicates."""
