"""One module per command; each takes run folders and options and returns what it wrote or found."""
