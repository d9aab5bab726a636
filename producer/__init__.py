"""linewatch producer: frame sources, rate control and publishing to the frames topic."""
