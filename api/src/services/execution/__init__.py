"""Running user workflows in worker processes."""
