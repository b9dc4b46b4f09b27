"""Services: execution (workers, pools) and package installation."""
