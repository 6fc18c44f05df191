"""LLM turns: an OpenAI-compatible chat completions stream, cut into sentences that the
avatar speaks as soon as each is complete, with the session's bounded conversation."""
