"""Pure decision logic: calendar evaluation and desired HPA bounds, with the clock injected."""
