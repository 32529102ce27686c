"""Live notes: a bounded window of the transcript turned into bullet points (LLM or extractive), kept as versions."""
