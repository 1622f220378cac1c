"""Where chunks run: in this process or as Ray tasks, and the one choice between them."""
