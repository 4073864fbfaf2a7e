"""Analysis of downloaded media: the backends (openai, local) and what they share."""
