"""What a node holds in memory: its items and their joins, and what changed for those who follow."""
