"""The read side: the figures the product answers with (the minimum gap, the totals,
champion vs challenger, the drift states), shared by the CLI, the demo and the dashboard."""
