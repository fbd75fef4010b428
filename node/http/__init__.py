"""The HTTP face of a node: routes, the like lane, input grammar, limits, causal tokens, pages."""
