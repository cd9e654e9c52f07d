"""Side-by-side benchmark: mini-llm against direct calls, a floor proxy, nginx, LiteLLM, Portkey."""
