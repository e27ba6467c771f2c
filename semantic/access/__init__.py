"""Access control: security contexts and the policies the planner applies for them."""
