"""RL math as small pure tensor functions: advantages, log-probs, losses, KL, aggregation."""
